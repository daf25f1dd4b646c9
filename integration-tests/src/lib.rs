//! Harness for Hubcast's end-to-end tests: a real [`hubcast_server::Server`] on
//! `127.0.0.1:0`, and real WebSocket clients that talk to it over real TCP sockets.
//!
//! Nothing here is mocked. Each test starts its own server inside its own tokio runtime, so
//! tests run in parallel without sharing state; the server stops when its [`TestServer`] is
//! dropped or, for tests that check shutdown itself, through [`TestServer::shutdown`].
//!
//! Every wait is bounded: receives time out after [`TIMEOUT`] and panic with what was
//! expected, so a broken server fails a test instead of hanging it.
//!
//! # Layout
//! - [`TestServer`]: start a server with a tweaked [`Config`], mint client URLs and tokens,
//!   look at the router, shut it down. One node, or three sharing Redis when
//!   `HUBCAST_TEST_TOPOLOGY=cluster` ([`topology`]): the same tests then run across nodes.
//! - [`JsonClient`]: a `json.webpubsub.azure.v1` client (connected message, acks, pings,
//!   group messages, close codes).
//! - [`SimpleClient`]: a client without subprotocol, which receives raw frames.
//! - [`upgrade_status`], [`raw_upgrade`]: handshakes whose HTTP outcome is the thing tested.
//! - [`Bystanders`]: two well-behaved clients that prove the server still works for others.
//! - [`assert_eventually!`]: polls router state until a condition holds.
//! - [`Rest`]: Azure's REST data plane over plain HTTP/1.1, signed like the official SDKs;
//!   [`TestServer::service_client`] for the gRPC control plane through the Rust SDK.
//! - [`webhook`]: a real HTTP event handler that records the events it receives.
//! - [`cluster`]: several nodes on one Redis, a Redis of a test's own, `hubcast` processes.

pub mod webhook;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{SinkExt as _, StreamExt as _};
use hubcast_auth::{TokenRequest, client_url, mint_client_token};
use hubcast_server::limits::LimitCounters;
use hubcast_server::{Config, Server};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::handshake::client::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod proxy;

#[doc(hidden)]
pub use tokio as __tokio;

mod control;
pub use control::{Rest, RestResponse, enc};

pub mod certs;
pub mod cluster;

pub mod topology;
pub use topology::{CLUSTER_NODES, NodeState, Routers, TOPOLOGY_ENV, Topology};

/// How long any single wait (a receive, a handshake, a condition) may take before the test
/// fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The primary access key of every test server (unless a test replaces the keys).
pub const PRIMARY_KEY: &str = "hubcast-test-primary-key-0123456789abcdef";

/// The secondary access key of every test server: tokens signed with it must be accepted too.
pub const SECONDARY_KEY: &str = "hubcast-test-secondary-key-fedcba9876543210";

/// The JSON subprotocol of Azure Web PubSub.
pub const JSON_SUBPROTOCOL: &str = "json.webpubsub.azure.v1";

/// The reliable JSON subprotocol (the default of Azure's JavaScript client).
pub const JSON_RELIABLE_SUBPROTOCOL: &str = "json.reliable.webpubsub.azure.v1";

/// Global join/leave permission.
pub const JOIN_ROLE: &str = "webpubsub.joinLeaveGroup";

/// Global publish permission.
pub const SEND_ROLE: &str = "webpubsub.sendToGroup";

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A running Hubcast server on ephemeral loopback ports: one node, or a cluster of
/// [`CLUSTER_NODES`] nodes, as [`Topology::from_env`] says (see [`topology`]).
pub struct TestServer {
    topology: Topology,
    /// The nodes in start order; on a cluster, nodes 1 and 2 take the clients and node 3
    /// the control calls.
    nodes: Vec<Node>,
    /// Each node's router, in the order of `nodes` (a slice of its own for [`Routers`]).
    routers: Vec<NodeState>,
    /// Which client node the next client URL names (a cluster alternates).
    next_client: AtomicUsize,
    endpoint: String,
    key: String,
    grace: Duration,
}

/// One running `hubcast_server::Server`.
struct Node {
    addr: SocketAddr,
    grpc_addr: SocketAddr,
    limits: Arc<LimitCounters>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), hubcast_server::Error>>>,
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer")
            .field("topology", &self.topology)
            .field(
                "addrs",
                &self.nodes.iter().map(|n| n.addr).collect::<Vec<_>>(),
            )
            .field("endpoint", &self.endpoint)
            .field("running", &self.nodes.iter().any(|n| n.task.is_some()))
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Binds a server for `config` and runs it until the returned node's shutdown sender is
    /// used or dropped. Returns the node, its router, its endpoint and its primary key.
    async fn start(config: Config) -> (Self, NodeState, String, String) {
        let server = tokio::time::timeout(TIMEOUT, Server::bind(config))
            .await
            .expect("Server::bind timed out")
            .expect("Server::bind failed");
        let addr = server.local_addr();
        let grpc_addr = server.grpc_addr();
        assert_ne!(addr.port(), 0, "local_addr must report the bound port");
        assert_ne!(grpc_addr.port(), 0, "grpc_addr must report the bound port");
        let endpoint = server.endpoint().to_owned();
        let key = server.keys().primary().to_owned();
        let router = NodeState::new(server.router(), server.cluster());
        let limits = server.limit_counters();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            // A send or a drop of the sender both mean "stop".
            let _ = rx.await;
        }));
        let node = Self {
            addr,
            grpc_addr,
            limits,
            shutdown: Some(tx),
            task: Some(task),
        };
        (node, router, endpoint, key)
    }
}

impl TestServer {
    /// Starts a server with the test defaults (see [`TestServer::start_with`]).
    ///
    /// # Panics
    /// The server cannot bind or does not bind within [`TIMEOUT`].
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server with the test defaults, changed by `configure`, in the topology that
    /// [`Topology::from_env`] names.
    ///
    /// Defaults: both listeners on `127.0.0.1:0`, access keys [`PRIMARY_KEY`] and
    /// [`SECONDARY_KEY`], everything else as [`Config::default`]. On a cluster every node
    /// gets the same configuration plus the shared Redis ([`cluster::REDIS_URL`]) under a
    /// key prefix of this server's own, a short lease ([`cluster::TEST_LEASE`]), and one
    /// public endpoint (node 1's, unless `configure` sets one), as behind a load balancer.
    ///
    /// # Panics
    /// A node cannot bind or does not bind within [`TIMEOUT`]; a cluster node does not join
    /// within [`TIMEOUT`].
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        match Topology::from_env() {
            Topology::Single => Self::start_single_with(configure).await,
            Topology::Cluster => Self::start_cluster_with(configure).await,
        }
    }

    /// Starts one node, whatever [`TOPOLOGY_ENV`] says: for tests that build a cluster of
    /// their own ([`cluster::TestCluster`]) or compare against one node.
    ///
    /// # Panics
    /// As [`TestServer::start_with`].
    pub async fn start_single_with(configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = Self::default_config();
        configure(&mut config);
        let grace = config.shutdown_grace;
        let (node, router, endpoint, key) = Node::start(config).await;
        Self {
            topology: Topology::Single,
            nodes: vec![node],
            routers: vec![router],
            next_client: AtomicUsize::new(0),
            endpoint,
            key,
            grace,
        }
    }

    async fn start_cluster_with(configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = Self::default_config();
        configure(&mut config);
        config.cluster.redis_url = Some(cluster::REDIS_URL.to_owned());
        config.cluster.key_prefix = cluster::unique_prefix(
            std::thread::current()
                .name()
                .unwrap_or("topology")
                .rsplit("::")
                .next()
                .unwrap_or("topology"),
        );
        config.cluster.lease = cluster::TEST_LEASE;
        let grace = config.shutdown_grace;
        let mut nodes = Vec::with_capacity(CLUSTER_NODES);
        let mut routers = Vec::with_capacity(CLUSTER_NODES);
        let mut first = None;
        for _ in 0..CLUSTER_NODES {
            let (node, router, node_endpoint, node_key) = Node::start(config.clone()).await;
            // Token audiences and REST signatures name the load balancer's URL, the same on
            // every node (docs/DEPLOYMENT.md): here node 1's. Keys are shared too.
            config.endpoint.get_or_insert_with(|| node_endpoint.clone());
            if config.access_keys.is_empty() {
                config.access_keys.push(node_key.clone());
            }
            first.get_or_insert((node_endpoint, node_key));
            nodes.push(node);
            routers.push(router);
        }
        let (endpoint, key) = first.expect("a cluster has nodes");
        let server = Self {
            topology: Topology::Cluster,
            nodes,
            routers,
            next_client: AtomicUsize::new(0),
            endpoint,
            key,
            grace,
        };
        for (i, router) in server.routers.iter().enumerate() {
            crate::assert_eventually!(
                router.cluster().is_some_and(|c| !c.metrics().degraded),
                "cluster node {} did not join",
                i + 1
            );
        }
        server
    }

    fn default_config() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            access_keys: vec![PRIMARY_KEY.to_owned(), SECONDARY_KEY.to_owned()],
            ..Config::default()
        }
    }

    /// The topology this server runs in.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// The node that takes control calls (REST, gRPC): the last one.
    fn control_node(&self) -> &Node {
        self.nodes.last().expect("a server has nodes")
    }

    /// The node the next client reaches: on a cluster nodes 1 and 2 in turn, as a load
    /// balancer without sticky sessions spreads clients.
    fn client_node(&self) -> &Node {
        match self.topology {
            Topology::Single => &self.nodes[0],
            Topology::Cluster => {
                let turn = self.next_client.fetch_add(1, Ordering::Relaxed);
                &self.nodes[turn % (CLUSTER_NODES - 1)]
            }
        }
    }

    /// The HTTP address of the node that takes control calls (REST, `/api/health`,
    /// `/metrics`): the only node, or node 3 of a cluster. Clients use
    /// [`TestServer::client_addr`].
    pub fn addr(&self) -> SocketAddr {
        self.control_node().addr
    }

    /// The HTTP address for the next client: the only node, or nodes 1 and 2 of a cluster
    /// in turn (each call takes a turn).
    pub fn client_addr(&self) -> SocketAddr {
        self.client_node().addr
    }

    /// The gRPC address (control plane, health, reflection, event stream) of the node that
    /// takes control calls.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.control_node().grpc_addr
    }

    /// The Azure-style connection string for the primary key.
    pub fn connection_string(&self) -> String {
        format!(
            "Endpoint={};AccessKey={};Version=1.0;",
            self.endpoint, self.key
        )
    }

    /// A Rust SDK client of the gRPC control plane, connected now (to the control node).
    ///
    /// # Panics
    /// The client cannot connect within [`TIMEOUT`].
    pub async fn service_client(&self) -> hubcast_sdk::ServiceClient {
        tokio::time::timeout(
            TIMEOUT,
            hubcast_sdk::ServiceClient::connect(
                &self.connection_string(),
                &self.grpc_addr().to_string(),
            ),
        )
        .await
        .expect("gRPC connect timed out")
        .expect("gRPC connect failed")
    }

    /// A REST client of the control node that signs each request as Azure's SDKs do (see
    /// [`Rest`]).
    pub fn rest(&self) -> Rest {
        Rest::new(self.addr(), &self.endpoint, &self.key)
    }

    /// The public endpoint (`http://127.0.0.1:PORT`) that token audiences name.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// How often each limit refused something, for assertions that refusals are counted.
    ///
    /// # Panics
    /// On a cluster: limits are each node's own, and so are their tests.
    pub fn limit_counters(&self) -> &LimitCounters {
        assert_eq!(
            self.topology,
            Topology::Single,
            "limit counters are per node: a test of them is single-node by nature"
        );
        &self.nodes[0].limits
    }

    /// The routers of every node, answering as one server (see [`Routers`]).
    pub fn router(&self) -> Routers<'_> {
        Routers::new(&self.routers)
    }

    /// The audience a client token for `hub` must carry.
    pub fn audience(&self, hub: &str) -> String {
        format!("{}/client/hubs/{hub}", self.endpoint)
    }

    /// `ws://HOST:PORT` of the next client node (see [`TestServer::client_addr`]) followed
    /// by `path_and_query`.
    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{path_and_query}", self.client_addr())
    }

    /// A client access token minted by the server's own code with the primary key, valid
    /// for an hour.
    pub fn token(&self, hub: &str, user: Option<&str>, roles: &[&str], groups: &[&str]) -> String {
        self.token_with_key(&self.key, hub, user, roles, groups)
    }

    /// A token for MQTT clients (audience `.../clients/mqtt/hubs/{hub}`), valid for an hour.
    pub fn mqtt_token(&self, hub: &str, user: Option<&str>, roles: &[&str]) -> String {
        let mut request = TokenRequest::new(hub);
        request.user_id = user.map(str::to_owned);
        request.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        hubcast_auth::mint_client_token_for(
            &self.key,
            &self.endpoint,
            hubcast_auth::ClientProtocol::Mqtt,
            &request,
        )
    }

    /// Like [`TestServer::token`], signed with `key`.
    pub fn token_with_key(
        &self,
        key: &str,
        hub: &str,
        user: Option<&str>,
        roles: &[&str],
        groups: &[&str],
    ) -> String {
        let request = TokenRequest {
            hub: hub.to_owned(),
            user_id: user.map(str::to_owned),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            ttl: Duration::from_secs(3600),
        };
        mint_client_token(key, &self.endpoint, &request)
    }

    /// A client access URL (`ws://.../client/hubs/{hub}?access_token=...`) of the next
    /// client node.
    pub fn url(&self, hub: &str, user: Option<&str>, roles: &[&str], groups: &[&str]) -> String {
        let token = self.token(hub, user, roles, groups);
        match self.topology {
            Topology::Single => client_url(&self.endpoint, hub, &token),
            // The audience names the public endpoint; the socket goes to one node.
            Topology::Cluster => client_url(&self.node_base(self.client_addr()), hub, &token),
        }
    }

    /// The base URL of one node, with the scheme of the public endpoint (`https` when the
    /// listeners serve TLS).
    fn node_base(&self, addr: SocketAddr) -> String {
        let scheme = if self.endpoint.starts_with("https:") {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{addr}")
    }

    /// Like [`TestServer::url`], on the node that holds (or held) connection `id` rather
    /// than the next client node: where a balancer that keeps a client on its node while it
    /// lives sends its reconnection. Reliable recovery needs that node, which keeps the
    /// session (docs/DEPLOYMENT.md, "Reliable clients across nodes"; a recovery on another
    /// node is refused, as tests/cluster.rs shows).
    ///
    /// # Panics
    /// On a cluster, `id` names none of its nodes.
    pub fn url_to_node_of(
        &self,
        id: &str,
        hub: &str,
        user: Option<&str>,
        roles: &[&str],
        groups: &[&str],
    ) -> String {
        let token = self.token(hub, user, roles, groups);
        match self.topology {
            Topology::Single => client_url(&self.endpoint, hub, &token),
            Topology::Cluster => {
                let node = self
                    .routers
                    .iter()
                    .position(|r| {
                        r.cluster()
                            .is_some_and(|c| c.owner_of(id) == Some(c.node()))
                    })
                    .unwrap_or_else(|| panic!("connection {id} names no node of this cluster"));
                client_url(&self.node_base(self.nodes[node].addr), hub, &token)
            }
        }
    }

    /// A client access URL through `proxy` (which stands in for the one node it forwards
    /// to), as [`TestServer::url`] would mint it.
    pub fn url_through(
        &self,
        proxy: &proxy::Proxy,
        hub: &str,
        user: Option<&str>,
        roles: &[&str],
        groups: &[&str],
    ) -> String {
        let token = self.token(hub, user, roles, groups);
        client_url(&format!("http://{}", proxy.addr()), hub, &token)
    }

    /// The client URL of `hub` without any token.
    pub fn anonymous_url(&self, hub: &str) -> String {
        self.ws_url(&format!("/client/hubs/{hub}"))
    }

    /// Valid claims for a hand-made token: the right `aud`, `iat` now, `exp` in an hour and
    /// `sub` if `user` is given. Tests change them to make bad tokens.
    pub fn claims(&self, hub: &str, user: Option<&str>) -> Value {
        let now = unix_now();
        let mut claims = json!({ "aud": self.audience(hub), "iat": now, "exp": now + 3600 });
        if let Some(user) = user {
            claims["sub"] = json!(user);
        }
        claims
    }

    /// Connects a [`JsonClient`] with a freshly minted token to the next client node.
    ///
    /// # Panics
    /// As [`JsonClient::connect`].
    pub async fn json_client(
        &self,
        hub: &str,
        user: Option<&str>,
        roles: &[&str],
        groups: &[&str],
    ) -> JsonClient {
        JsonClient::connect(&self.url(hub, user, roles, groups)).await
    }

    /// Triggers shutdown of every node and waits for each `run` to return, for at most the
    /// configured grace period plus [`TIMEOUT`]. Returns how long that took.
    ///
    /// # Panics
    /// A `run` does not return in time, returns an error, or panicked.
    pub async fn shutdown(mut self) -> Duration {
        let started = Instant::now();
        let grace = self.grace;
        let mut tasks = Vec::with_capacity(self.nodes.len());
        for node in &mut self.nodes {
            let tx = node.shutdown.take().expect("shutdown is called once");
            tasks.push(node.task.take().expect("shutdown is called once"));
            let _ = tx.send(());
        }
        let outcomes = tokio::time::timeout(grace + TIMEOUT, futures_util::future::join_all(tasks))
            .await
            .unwrap_or_else(|_| {
                panic!("Server::run did not return within grace {grace:?} + {TIMEOUT:?}")
            });
        for outcome in outcomes {
            outcome
                .expect("Server::run panicked")
                .expect("Server::run returned an error");
        }
        started.elapsed()
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Signs `claims` as an HS256 JWT with `key` (its UTF-8 bytes, as Azure does).
pub fn sign_token(key: &str, claims: &Value) -> String {
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .expect("claims encode")
}

/// An unsigned JWT (`alg: none`, empty signature) carrying `claims`.
pub fn unsigned_token(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.")
}

/// An upgrade request for `url`, offering `subprotocols` (none: no header) and sending
/// `Authorization: Bearer <bearer>` if given.
///
/// # Panics
/// `url` is not a valid WebSocket URL or a header value is not valid.
pub fn request(url: &str, subprotocols: &[&str], bearer: Option<&str>) -> Request {
    let mut request = url.into_client_request().expect("valid ws:// URL");
    if !subprotocols.is_empty() {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(&subprotocols.join(", ")).expect("valid subprotocol list"),
        );
    }
    if let Some(token) = bearer {
        request.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).expect("valid token"),
        );
    }
    request
}

/// Performs the handshake for `request`, within [`TIMEOUT`].
///
/// # Errors
/// The handshake failed; a refused upgrade is `tungstenite::Error::Http` with the response.
///
/// # Panics
/// The handshake did not finish within [`TIMEOUT`].
pub async fn try_connect(request: Request) -> Result<(Ws, Response), tungstenite::Error> {
    // TCP_NODELAY like any latency-minded client: Nagle's algorithm would hold back small
    // frames waiting for acks.
    tokio::time::timeout(
        TIMEOUT,
        tokio_tungstenite::connect_async_with_config(request, None, true),
    )
    .await
    .expect("WebSocket handshake timed out")
}

/// Like [`try_connect`], over a socket whose kernel receive buffer is set to `recv_buffer`
/// bytes before connecting (which also turns off receive-window autotuning). A client that
/// then stops reading backs data up into the server quickly.
///
/// # Errors
/// As [`try_connect`].
///
/// # Panics
/// The URL has no host or port, or the socket cannot be made or connected.
pub async fn try_connect_with_recv_buffer(
    request: Request,
    recv_buffer: u32,
) -> Result<(Ws, Response), tungstenite::Error> {
    let host = request.uri().host().expect("URL has a host").to_owned();
    let port = request.uri().port_u16().expect("URL has a port");
    let addr: SocketAddr = format!("{host}:{port}").parse().expect("IP address host");
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .expect("socket");
    socket
        .set_recv_buffer_size(recv_buffer)
        .expect("SO_RCVBUF is settable");
    let stream = tokio::time::timeout(TIMEOUT, socket.connect(addr))
        .await
        .expect("TCP connect timed out")
        .expect("TCP connect");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    tokio::time::timeout(
        TIMEOUT,
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("WebSocket handshake timed out")
}

/// The HTTP status of the upgrade response to `request`: 101 if the upgrade was accepted
/// (the socket is then closed), else the status that refused it.
///
/// # Panics
/// The handshake failed without an HTTP response (e.g. connection refused) or timed out.
pub async fn upgrade_status(request: Request) -> u16 {
    match try_connect(request).await {
        Ok((mut ws, response)) => {
            let _ = ws.close(None).await;
            response.status().as_u16()
        }
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("handshake failed without an HTTP status: {other}"),
    }
}

/// The outcome of [`raw_upgrade`].
#[derive(Debug)]
pub struct RawUpgrade {
    /// HTTP status of the response.
    pub status: u16,
    /// Response headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The WebSocket, if the status was 101.
    pub ws: Option<Ws>,
}

impl RawUpgrade {
    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A WebSocket upgrade written by hand, without the client-side checks that tungstenite
/// makes (it refuses a response that does not echo an offered subprotocol, which is exactly
/// what the server must do for unknown subprotocols). Verifies `Sec-WebSocket-Accept` on a
/// 101.
///
/// # Panics
/// Connection or I/O failure, a malformed response, or a wrong `Sec-WebSocket-Accept`.
pub async fn raw_upgrade(
    addr: SocketAddr,
    path_and_query: &str,
    extra_headers: &[(&str, &str)],
) -> RawUpgrade {
    // The sample key of RFC 6455 §1.3 and its accept value.
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    let work = async {
        let mut stream = TcpStream::connect(addr).await.expect("TCP connect");
        let mut head = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (name, value) in extra_headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .expect("write request");
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.expect("read response");
            assert!(
                n > 0,
                "connection closed before the response head ended: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let text = String::from_utf8(buf[..end].to_vec()).expect("ASCII response head");
        let mut lines = text.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header line has a colon");
                (n.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        let mut upgrade = RawUpgrade {
            status,
            headers,
            ws: None,
        };
        if status == 101 {
            assert_eq!(
                upgrade.header("sec-websocket-accept"),
                Some(ACCEPT),
                "wrong Sec-WebSocket-Accept"
            );
            let rest = buf[end..].to_vec();
            upgrade.ws = Some(
                WebSocketStream::from_partially_read(
                    MaybeTlsStream::Plain(stream),
                    rest,
                    Role::Client,
                    None,
                )
                .await,
            );
        }
        upgrade
    };
    tokio::time::timeout(TIMEOUT, work)
        .await
        .expect("raw upgrade timed out")
}

/// How a connection ended, as seen by a [`JsonClient`].
#[derive(Debug)]
pub struct Closed {
    /// The close code (1005 if the close frame had none).
    pub code: u16,
    /// The close reason.
    pub reason: String,
    /// The JSON messages received before the close frame (including any not yet consumed).
    pub messages: Vec<Value>,
}

impl Closed {
    /// Asserts that the last message before the close was the `disconnected` system message
    /// and that no other `disconnected` came before it; returns its `message` (the reason).
    ///
    /// # Panics
    /// As described.
    pub fn expect_disconnected(&self) -> &str {
        let last = self.messages.last().unwrap_or_else(|| {
            panic!(
                "no `disconnected` system message before the close (code {}, reason {:?})",
                self.code, self.reason
            )
        });
        assert_eq!(
            (last["type"].as_str(), last["event"].as_str()),
            (Some("system"), Some("disconnected")),
            "the last message before the close must be `disconnected`; got {last}"
        );
        let count = self
            .messages
            .iter()
            .filter(|m| m["type"] == "system" && m["event"] == "disconnected")
            .count();
        assert_eq!(count, 1, "exactly one `disconnected`: {:?}", self.messages);
        last["message"]
            .as_str()
            .unwrap_or_else(|| panic!("`disconnected` carries a string `message`: {last}"))
    }
}

/// A `json.webpubsub.azure.v1` client.
#[derive(Debug)]
pub struct JsonClient {
    ws: Ws,
    response: Response,
    connected: Value,
    /// Messages read while looking for something else (an ack, a pong, a data message).
    pending: VecDeque<Value>,
    /// ackIds for helpers; far above the small ids that tests pick by hand.
    next_ack: u64,
}

impl JsonClient {
    /// Connects to `url` offering the JSON subprotocol and reads the `connected` message.
    ///
    /// # Panics
    /// The handshake fails, the subprotocol is not echoed, or the first message is not
    /// `connected` (within [`TIMEOUT`]).
    pub async fn connect(url: &str) -> Self {
        Self::connect_request(request(url, &[JSON_SUBPROTOCOL], None)).await
    }

    /// Connects with a prepared request (custom headers, subprotocol spelling).
    ///
    /// # Panics
    /// As [`JsonClient::connect`].
    pub async fn connect_request(request: Request) -> Self {
        let (ws, response) = try_connect(request)
            .await
            .unwrap_or_else(|e| panic!("JSON client handshake failed: {}", describe(&e)));
        Self::after_handshake(ws, response).await
    }

    /// Connects offering `subprotocol` (e.g. [`JSON_RELIABLE_SUBPROTOCOL`]) and reads the
    /// `connected` message.
    ///
    /// # Panics
    /// As [`JsonClient::connect`].
    pub async fn connect_as(url: &str, subprotocol: &str) -> Self {
        let (ws, response) = try_connect(request(url, &[subprotocol], None))
            .await
            .unwrap_or_else(|e| panic!("JSON client handshake failed: {}", describe(&e)));
        Self::after_handshake_as(ws, response, subprotocol).await
    }

    /// Connects offering `subprotocol` without expecting `connected`: for recoveries that
    /// the server refuses after the upgrade.
    ///
    /// # Panics
    /// The handshake fails.
    pub async fn connect_raw(url: &str, subprotocol: &str) -> Self {
        let (ws, response) = try_connect(request(url, &[subprotocol], None))
            .await
            .unwrap_or_else(|e| panic!("handshake failed: {}", describe(&e)));
        Self {
            ws,
            response,
            connected: Value::Null,
            pending: VecDeque::new(),
            next_ack: 1_000_000,
        }
    }

    /// Drops the TCP connection without a WebSocket close frame, as a network failure would.
    pub fn abort(self) {
        drop(self.ws);
    }

    /// Connects like [`JsonClient::connect`] over a socket with a small kernel receive
    /// buffer (see [`try_connect_with_recv_buffer`]).
    ///
    /// # Panics
    /// As [`JsonClient::connect`].
    pub async fn connect_with_recv_buffer(url: &str, recv_buffer: u32) -> Self {
        let (ws, response) =
            try_connect_with_recv_buffer(request(url, &[JSON_SUBPROTOCOL], None), recv_buffer)
                .await
                .unwrap_or_else(|e| panic!("JSON client handshake failed: {}", describe(&e)));
        Self::after_handshake(ws, response).await
    }

    async fn after_handshake(ws: Ws, response: Response) -> Self {
        Self::after_handshake_as(ws, response, JSON_SUBPROTOCOL).await
    }

    async fn after_handshake_as(ws: Ws, response: Response, subprotocol: &str) -> Self {
        let echoed = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            echoed.eq_ignore_ascii_case(subprotocol),
            "server must echo the {subprotocol} subprotocol; echoed {echoed:?}"
        );
        let mut client = Self {
            ws,
            response,
            connected: Value::Null,
            pending: VecDeque::new(),
            next_ack: 1_000_000,
        };
        let first = client.recv().await;
        assert_eq!(
            (first["type"].as_str(), first["event"].as_str()),
            (Some("system"), Some("connected")),
            "the first message must be `connected`; got {first}"
        );
        assert!(
            first["connectionId"]
                .as_str()
                .is_some_and(|id| !id.is_empty()),
            "`connected` carries a non-empty connectionId: {first}"
        );
        assert!(
            first
                .get("userId")
                .is_some_and(|u| u.is_string() || u.is_null()),
            "`connected` carries userId as a string or null: {first}"
        );
        client.connected = first;
        client
    }

    /// The `connected` system message.
    pub fn connected(&self) -> &Value {
        &self.connected
    }

    /// This connection's id, from the `connected` message.
    pub fn connection_id(&self) -> &str {
        self.connected["connectionId"]
            .as_str()
            .expect("checked at connect")
    }

    /// This connection's user id, from the `connected` message (`None` when null).
    pub fn user_id(&self) -> Option<&str> {
        self.connected["userId"].as_str()
    }

    /// The HTTP response of the upgrade.
    pub fn response(&self) -> &Response {
        &self.response
    }

    /// Sends a JSON message as one text frame.
    ///
    /// # Panics
    /// The socket write fails or times out.
    pub async fn send(&mut self, message: Value) {
        self.send_frame(Message::text(message.to_string())).await;
    }

    /// Sends any frame (malformed text, binary, ...).
    ///
    /// # Panics
    /// The socket write fails or times out.
    pub async fn send_frame(&mut self, frame: Message) {
        tokio::time::timeout(TIMEOUT, self.ws.send(frame))
            .await
            .expect("send timed out")
            .expect("send failed");
    }

    /// The next JSON message, within [`TIMEOUT`].
    ///
    /// # Panics
    /// Timeout, a close, a non-JSON or binary frame.
    pub async fn recv(&mut self) -> Value {
        if let Some(message) = self.pending.pop_front() {
            return message;
        }
        self.read().await
    }

    /// Reads the next JSON message from the socket (not from `pending`).
    async fn read(&mut self) -> Value {
        match tokio::time::timeout(TIMEOUT, self.read_frame()).await {
            Ok(Frame::Json(value)) => value,
            Ok(Frame::Closed(code, reason)) => {
                panic!("connection closed while a message was expected: {code} {reason:?}")
            }
            Ok(Frame::Ended(why)) => panic!("connection ended while a message was expected: {why}"),
            Err(_) => panic!("no message within {TIMEOUT:?}"),
        }
    }

    async fn read_frame(&mut self) -> Frame {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("server sent non-JSON text {text:?}: {e}"));
                    return Frame::Json(value);
                }
                Some(Ok(Message::Binary(bytes))) => {
                    panic!("server sent a binary frame to a JSON client: {bytes:?}")
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(f) => Frame::Closed(u16::from(f.code), f.reason.as_str().to_owned()),
                        None => Frame::Closed(1005, String::new()),
                    };
                }
                Some(Err(e)) => return Frame::Ended(describe(&e)),
                None => return Frame::Ended("stream ended".to_owned()),
            }
        }
    }

    /// The next message for which `matches` holds; messages read on the way are kept, in
    /// order, for later `recv` calls.
    ///
    /// # Panics
    /// As [`JsonClient::recv`].
    pub async fn recv_where(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.pending.iter().position(&matches) {
            return self.pending.remove(i).expect("index found");
        }
        loop {
            let message = self.read().await;
            if matches(&message) {
                return message;
            }
            self.pending.push_back(message);
        }
    }

    /// The next data message (`"type":"message"`), keeping anything else for later.
    ///
    /// # Panics
    /// As [`JsonClient::recv`].
    pub async fn recv_message(&mut self) -> Value {
        self.recv_where(|m| m["type"] == "message").await
    }

    /// The ack for `ack_id`, keeping anything else for later.
    ///
    /// # Panics
    /// As [`JsonClient::recv`].
    pub async fn ack(&mut self, ack_id: u64) -> Value {
        self.recv_where(|m| m["type"] == "ack" && m["ackId"].as_u64() == Some(ack_id))
            .await
    }

    /// Waits for the ack of `ack_id` and asserts it succeeded.
    ///
    /// # Panics
    /// As [`JsonClient::recv`], or the ack reports a failure.
    pub async fn expect_ack_ok(&mut self, ack_id: u64) {
        let ack = self.ack(ack_id).await;
        assert_eq!(ack["success"], true, "ack {ack_id} should succeed: {ack}");
    }

    /// Waits for the ack of `ack_id`, asserts it failed with error `name` and a string
    /// `message`, and returns the ack.
    ///
    /// # Panics
    /// As [`JsonClient::recv`], or the ack is not such a failure.
    pub async fn expect_ack_error(&mut self, ack_id: u64, name: &str) -> Value {
        let ack = self.ack(ack_id).await;
        assert_eq!(ack["success"], false, "ack {ack_id} should fail: {ack}");
        assert_eq!(ack["error"]["name"], name, "ack {ack_id} error name: {ack}");
        assert!(
            ack["error"]["message"].is_string(),
            "ack error carries a string message: {ack}"
        );
        ack
    }

    fn next_ack_id(&mut self) -> u64 {
        self.next_ack += 1;
        self.next_ack
    }

    /// Joins `group` and waits for a successful ack.
    ///
    /// # Panics
    /// The join fails or times out.
    pub async fn join(&mut self, group: &str) {
        let ack_id = self.next_ack_id();
        self.send(json!({"type": "joinGroup", "group": group, "ackId": ack_id}))
            .await;
        self.expect_ack_ok(ack_id).await;
    }

    /// Leaves `group` and waits for a successful ack.
    ///
    /// # Panics
    /// The leave fails or times out.
    pub async fn leave(&mut self, group: &str) {
        let ack_id = self.next_ack_id();
        self.send(json!({"type": "leaveGroup", "group": group, "ackId": ack_id}))
            .await;
        self.expect_ack_ok(ack_id).await;
    }

    /// Publishes `text` (dataType `text`) to `group` and waits for a successful ack.
    ///
    /// # Panics
    /// The send fails or times out.
    pub async fn publish_text(&mut self, group: &str, text: &str) {
        let ack_id = self.next_ack_id();
        self.send(json!({
            "type": "sendToGroup", "group": group, "ackId": ack_id,
            "dataType": "text", "data": text,
        }))
        .await;
        self.expect_ack_ok(ack_id).await;
    }

    /// Sends `ping` and waits for `pong` (anything else received on the way is kept).
    ///
    /// # Panics
    /// No pong within [`TIMEOUT`].
    pub async fn ping(&mut self) {
        self.send(json!({"type": "ping"})).await;
        self.recv_where(|m| m["type"] == "pong").await;
    }

    /// Asserts that no message is waiting, by a round trip: everything the server queued
    /// before answering a ping would arrive before the pong.
    ///
    /// # Panics
    /// Something other than the pong arrived first.
    pub async fn expect_nothing_queued(&mut self) {
        self.send(json!({"type": "ping"})).await;
        let next = self.recv().await;
        assert_eq!(
            next["type"], "pong",
            "expected nothing queued before the pong; got {next}"
        );
    }

    /// Reads until the server closes the connection; returns the close code and reason and
    /// every JSON message that came before it (including unread ones).
    ///
    /// # Panics
    /// No close frame within [`TIMEOUT`], or the connection ended without a close frame.
    pub async fn expect_close(mut self) -> Closed {
        let mut messages: Vec<Value> = self.pending.drain(..).collect();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.read_frame()).await {
                Ok(Frame::Json(value)) => messages.push(value),
                Ok(Frame::Closed(code, reason)) => {
                    return Closed {
                        code,
                        reason,
                        messages,
                    };
                }
                Ok(Frame::Ended(why)) => {
                    panic!(
                        "connection ended without a close frame ({why}); before it: {messages:?}"
                    )
                }
                Err(_) => panic!("no close within {TIMEOUT:?}; received {messages:?}"),
            }
        }
    }

    /// Closes the connection from the client side (normal closure) and waits for the
    /// server's close frame.
    ///
    /// # Panics
    /// The close handshake does not finish within [`TIMEOUT`].
    pub async fn close(mut self) {
        tokio::time::timeout(TIMEOUT, async {
            let normal = tungstenite::protocol::CloseFrame {
                code: tungstenite::protocol::frame::coding::CloseCode::Normal,
                reason: "".into(),
            };
            let _ = self.ws.close(Some(normal)).await;
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await
        .expect("close handshake timed out");
    }

    /// Closes the connection from the client side with a close frame that carries no code,
    /// as Azure's JavaScript client does, and waits for the server's close frame.
    ///
    /// # Panics
    /// The close handshake does not finish within [`TIMEOUT`].
    pub async fn close_without_code(mut self) {
        tokio::time::timeout(TIMEOUT, async {
            let _ = self.ws.send(Message::Close(None)).await;
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await
        .expect("close handshake timed out");
    }

    /// Reads everything the server sends until the connection ends, for at most `limit`;
    /// used on clients that stopped reading for a while.
    ///
    /// # Panics
    /// The connection is still open after `limit`.
    pub async fn drain_until_closed(mut self, limit: Duration) -> Drained {
        let mut drained = Drained::default();
        drained.messages.extend(self.pending.drain(..));
        let work = async {
            loop {
                match self.read_frame().await {
                    Frame::Json(v) => drained.messages.push(v),
                    Frame::Closed(code, reason) => {
                        drained.close = Some((code, reason));
                        break;
                    }
                    Frame::Ended(why) => {
                        drained.ended = Some(why);
                        break;
                    }
                }
            }
        };
        tokio::time::timeout(limit, work)
            .await
            .unwrap_or_else(|_| panic!("connection still open after {limit:?}"));
        drained
    }
}

/// What [`JsonClient::drain_until_closed`] read.
#[derive(Debug, Default)]
pub struct Drained {
    /// Every JSON message, in order.
    pub messages: Vec<Value>,
    /// The close frame, if the server sent one.
    pub close: Option<(u16, String)>,
    /// Why the stream ended without a close frame, if it did.
    pub ended: Option<String>,
}

/// One read from the socket.
enum Frame {
    Json(Value),
    Closed(u16, String),
    Ended(String),
}

fn describe(error: &tungstenite::Error) -> String {
    match error {
        tungstenite::Error::Http(response) => format!(
            "HTTP {} {:?}",
            response.status(),
            response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
        ),
        other => other.to_string(),
    }
}

/// How a connection ended, as seen by a [`SimpleClient`].
#[derive(Debug)]
pub struct SimpleClosed {
    /// The close code (1005 if the close frame had none).
    pub code: u16,
    /// The close reason.
    pub reason: String,
    /// Data frames received before the close.
    pub frames: Vec<Message>,
}

/// A simple WebSocket client: no subprotocol; it receives group data as raw frames.
#[derive(Debug)]
pub struct SimpleClient {
    ws: Ws,
}

impl SimpleClient {
    /// Connects without offering a subprotocol.
    ///
    /// # Panics
    /// The handshake fails, or the server answered with a subprotocol.
    pub async fn connect(url: &str) -> Self {
        let (ws, response) = try_connect(request(url, &[], None))
            .await
            .unwrap_or_else(|e| panic!("simple client handshake failed: {}", describe(&e)));
        assert!(
            response.headers().get("sec-websocket-protocol").is_none(),
            "no subprotocol was offered, none may be echoed"
        );
        Self { ws }
    }

    /// Wraps an already upgraded socket (e.g. from [`raw_upgrade`]).
    pub fn from_ws(ws: Ws) -> Self {
        Self { ws }
    }

    /// Sends one frame.
    ///
    /// # Panics
    /// The write fails or times out.
    pub async fn send(&mut self, frame: Message) {
        tokio::time::timeout(TIMEOUT, self.ws.send(frame))
            .await
            .expect("send timed out")
            .expect("send failed");
    }

    /// The next text or binary frame, within [`TIMEOUT`] (pings and pongs are skipped).
    ///
    /// # Panics
    /// Timeout or the connection ends.
    pub async fn recv(&mut self) -> Message {
        let work = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => return m,
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(frame))) => {
                        panic!("connection closed while a frame was expected: {frame:?}")
                    }
                    Some(Err(e)) => panic!("connection failed: {}", describe(&e)),
                    None => panic!("connection ended while a frame was expected"),
                }
            }
        };
        tokio::time::timeout(TIMEOUT, work)
            .await
            .unwrap_or_else(|_| panic!("no frame within {TIMEOUT:?}"))
    }

    /// Reads until the server closes the connection.
    ///
    /// # Panics
    /// No close frame within [`TIMEOUT`], or the connection ended without one.
    pub async fn expect_close(mut self) -> SimpleClosed {
        let mut frames = Vec::new();
        let work = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => frames.push(m),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame
                            .map(|f| (u16::from(f.code), f.reason.as_str().to_owned()))
                            .unwrap_or((1005, String::new()));
                        return (code, reason);
                    }
                    Some(Err(e)) => panic!(
                        "connection ended without a close frame ({}); frames: {frames:?}",
                        describe(&e)
                    ),
                    None => panic!("connection ended without a close frame; frames: {frames:?}"),
                }
            }
        };
        let (code, reason) = tokio::time::timeout(TIMEOUT, work)
            .await
            .unwrap_or_else(|_| panic!("no close within {TIMEOUT:?}"));
        SimpleClosed {
            code,
            reason,
            frames,
        }
    }
}

/// Two well-behaved clients on a hub: a publisher and a subscriber of one group. Connect them
/// before doing something bad to the server, then [`Bystanders::check`] that they still work.
#[derive(Debug)]
pub struct Bystanders {
    hub: String,
    group: String,
    sender: JsonClient,
    receiver: JsonClient,
    round: u64,
}

impl Bystanders {
    /// Connects both clients to `hub`; the receiver joins the group, and one round of
    /// [`Bystanders::check`] runs.
    ///
    /// # Panics
    /// Anything does not work.
    pub async fn connect(server: &TestServer, hub: &str) -> Self {
        let group = "bystanders".to_owned();
        let sender = server
            .json_client(hub, Some("bystander-sender"), &[SEND_ROLE], &[])
            .await;
        let mut receiver = server
            .json_client(hub, Some("bystander-receiver"), &[JOIN_ROLE], &[])
            .await;
        receiver.join(&group).await;
        let mut this = Self {
            hub: hub.to_owned(),
            group,
            sender,
            receiver,
            round: 0,
        };
        this.check(server).await;
        this
    }

    /// The group the receiver is in.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The receiver's next data message (for tests that publish to [`Bystanders::group`]
    /// themselves).
    ///
    /// # Panics
    /// No data message within [`TIMEOUT`].
    pub async fn receiver_next_message(&mut self) -> Value {
        self.receiver.recv_message().await
    }

    /// Asserts both connections are still registered and open: a fresh message goes from
    /// the sender to the receiver, and it is the next data message the receiver sees (so
    /// nothing sent by anyone else leaked into the group); both answer pings.
    ///
    /// # Panics
    /// Anything does not work.
    pub async fn check(&mut self, server: &TestServer) {
        self.round += 1;
        let text = format!("bystander round {}", self.round);
        for client in [&self.sender, &self.receiver] {
            assert!(
                server
                    .router()
                    .connection_exists(&self.hub, client.connection_id()),
                "bystander {} is gone",
                client.connection_id()
            );
        }
        self.sender.publish_text(&self.group, &text).await;
        let message = self.receiver.recv_message().await;
        assert_eq!(message["group"], self.group.as_str(), "{message}");
        assert_eq!(message["data"], text.as_str(), "{message}");
        self.sender.ping().await;
        self.receiver.ping().await;
    }
}

/// Polls a condition until it holds, failing the test after [`TIMEOUT`]. For state that has
/// no event to await (router tables, counters); never a substitute for awaiting a message.
///
/// ```no_run
/// # async fn example(server: &hubcast_integration_tests::TestServer, id: &str) {
/// use hubcast_integration_tests::assert_eventually;
/// assert_eventually!(!server.router().connection_exists("chat", id), "{id} still registered");
/// # }
/// ```
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr $(,)?) => {
        $crate::assert_eventually!($cond, "condition never held: {}", stringify!($cond))
    };
    ($cond:expr, $($arg:tt)+) => {{
        let deadline = ::std::time::Instant::now() + $crate::TIMEOUT;
        loop {
            if $cond {
                break;
            }
            if ::std::time::Instant::now() >= deadline {
                panic!($($arg)+);
            }
            $crate::__tokio::time::sleep(::std::time::Duration::from_millis(10)).await;
        }
    }};
}
