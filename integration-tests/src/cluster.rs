//! Multi-node harness: several [`TestServer`]s sharing one real Redis under a key prefix of
//! their own, a Redis of a test's own on a spare port (to stop and restart it), a Redis
//! Cluster of a test's own (three masters, to stop and restart one of them), and the real
//! `hubcast` binary as a separate process (to kill it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hubcast_server::Config;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use crate::{PRIMARY_KEY, TIMEOUT, TestServer};

/// The shared Redis of the test machine (`scripts/test` makes sure it runs).
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The lease the cluster tests use, short so that lease expiry fits in a test.
pub const TEST_LEASE: Duration = Duration::from_secs(2);

/// A key prefix no other test (or test run) uses.
pub fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("hubcast-test:{test}:{}:{nanos}", std::process::id())
}

/// Several Hubcast nodes, in this process, forming one cluster.
#[derive(Debug)]
pub struct TestCluster {
    /// The nodes, in start order.
    pub nodes: Vec<TestServer>,
    /// Their shared key prefix.
    pub prefix: String,
}

impl TestCluster {
    /// Starts `n` nodes on the shared Redis with a fresh prefix and [`TEST_LEASE`], and waits
    /// until every one is subscribed.
    ///
    /// # Panics
    /// A node cannot start or does not become healthy within [`TIMEOUT`].
    pub async fn start(test: &str, n: usize) -> Self {
        Self::start_on(REDIS_URL, &unique_prefix(test), n, |_| {}).await
    }

    /// Starts `n` nodes on `redis_url` under `prefix`, each configured by `configure` too.
    ///
    /// # Panics
    /// As [`TestCluster::start`].
    pub async fn start_on(
        redis_url: &str,
        prefix: &str,
        n: usize,
        configure: impl Fn(&mut Config),
    ) -> Self {
        Self::start_nodes(prefix, n, |c| {
            c.cluster.redis_url = Some(redis_url.to_owned());
            configure(c);
        })
        .await
    }

    /// Starts `n` nodes on the Redis Cluster with seed nodes `seeds`, under `prefix`.
    ///
    /// # Panics
    /// As [`TestCluster::start`].
    pub async fn start_on_redis_cluster(seeds: &[String], prefix: &str, n: usize) -> Self {
        Self::start_nodes(prefix, n, |c| {
            c.cluster.redis_cluster_nodes = seeds.to_vec()
        })
        .await
    }

    async fn start_nodes(prefix: &str, n: usize, configure: impl Fn(&mut Config)) -> Self {
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(
                TestServer::start_single_with(|c| {
                    c.cluster.key_prefix = prefix.to_owned();
                    c.cluster.lease = TEST_LEASE;
                    configure(c);
                })
                .await,
            );
        }
        let cluster = Self {
            nodes,
            prefix: prefix.to_owned(),
        };
        cluster.wait_healthy().await;
        cluster
    }

    /// Node `i` (0-based).
    pub fn node(&self, i: usize) -> &TestServer {
        &self.nodes[i]
    }

    /// Waits until no node reports itself degraded.
    ///
    /// # Panics
    /// Some node is still degraded after [`TIMEOUT`].
    pub async fn wait_healthy(&self) {
        for node in &self.nodes {
            crate::assert_eventually!(
                !node.cluster_degraded(),
                "node {} did not join the cluster",
                node.addr()
            );
        }
    }
}

impl TestServer {
    /// Whether some node of this server is part of a cluster and degraded (false on a
    /// single node).
    pub fn cluster_degraded(&self) -> bool {
        self.router()
            .nodes()
            .iter()
            .any(|r| r.cluster().is_some_and(|c| c.metrics().degraded))
    }
}

/// A port nothing listens on right now.
pub async fn spare_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    listener.local_addr().expect("local address").port()
}

/// Whether a Redis answers `PING` at `addr`.
pub async fn redis_answers(addr: SocketAddr) -> bool {
    let ping = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 7];
        stream.read_exact(&mut buf).await.ok()?;
        Some(&buf == b"+PONG\r\n")
    };
    tokio::time::timeout(Duration::from_secs(1), ping)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// A `redis-server` process of a test's own, on a loopback port; killed when dropped.
#[derive(Debug)]
pub struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts `redis-server` on a spare port, without persistence.
    ///
    /// # Panics
    /// `redis-server` is missing or does not answer within [`TIMEOUT`].
    pub async fn start() -> Self {
        let mut redis = Self {
            port: spare_port().await,
            child: None,
        };
        redis.restart().await;
        redis
    }

    /// The URL of this Redis.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills the server (SIGKILL) and waits until the port is closed.
    ///
    /// # Panics
    /// It still answers after [`TIMEOUT`].
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        crate::assert_eventually!(!redis_answers(self.addr()).await, "Redis still answers");
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is answered, as with
    /// a Redis stalled by a long command or a busy machine.
    pub fn pause(&self) {
        signal(self.child.as_ref().expect("Redis is running"), "STOP");
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        signal(self.child.as_ref().expect("Redis is running"), "CONT");
    }

    /// Starts the server (again) on the same port.
    ///
    /// # Panics
    /// As [`OwnRedis::start`].
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "Redis is already running");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        self.child = Some(child);
        crate::assert_eventually!(
            redis_answers(self.addr()).await,
            "redis-server on port {} did not answer",
            self.port
        );
    }
}

/// A Redis Cluster of a test's own: three masters without replicas, on spare loopback ports,
/// their cluster config files in a temporary directory. Every process is killed and the
/// directory removed when dropped.
#[derive(Debug)]
pub struct OwnRedisCluster {
    dir: PathBuf,
    nodes: Vec<ClusterMember>,
}

#[derive(Debug)]
struct ClusterMember {
    port: u16,
    child: Option<Child>,
}

impl ClusterMember {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// How long a cluster node may be unreachable before the others mark it failed: short, so a
/// test sees the cluster react within seconds.
const CLUSTER_NODE_TIMEOUT_MS: u32 = 2000;

impl OwnRedisCluster {
    /// Starts three `redis-server --cluster-enabled yes` processes, joins them with
    /// `redis-cli --cluster create` (the 16384 slots split over three masters) and waits
    /// until every node reports `cluster_state:ok`.
    ///
    /// # Panics
    /// `redis-server` or `redis-cli` is missing, or the cluster does not form in time.
    pub async fn start() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "hubcast-redis-cluster-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create the Redis Cluster directory");
        let mut cluster = Self {
            dir,
            nodes: Vec::new(),
        };
        while cluster.nodes.len() < 3 {
            let port = cluster_port().await;
            if cluster.nodes.iter().any(|n| n.port == port) {
                continue;
            }
            cluster.nodes.push(ClusterMember { port, child: None });
        }
        for i in 0..cluster.nodes.len() {
            cluster.restart(i).await;
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = tokio::time::timeout(
            TIMEOUT * 4,
            Command::new("redis-cli")
                .arg("--cluster")
                .arg("create")
                .args(&addrs)
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .stdin(Stdio::null())
                .output(),
        )
        .await
        .expect("redis-cli --cluster create timed out")
        .expect("redis-cli must be installed (scripts/test installs it)");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        cluster.wait_ok().await;
        cluster
    }

    /// The URLs of every node, as seeds for Hubcast.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(ClusterMember::url).collect()
    }

    /// How many nodes the cluster has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: the cluster has three nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A connection to node `i` alone (not cluster-aware: it answers for itself).
    ///
    /// # Panics
    /// The node does not accept a connection.
    pub async fn node_connection(&self, i: usize) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.nodes[i].url())
            .expect("node URL")
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("connect to Redis Cluster node {i}: {e}"))
    }

    /// How many clients are subscribed to `channel` on node `i` itself (classic pub/sub
    /// counts per node in a Redis Cluster).
    ///
    /// # Panics
    /// The node does not answer.
    pub async fn subscribers_on(&self, i: usize, channel: &str) -> i64 {
        let mut conn = self.node_connection(i).await;
        let (_, count): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async::<Vec<(String, i64)>>(&mut conn)
            .await
            .expect("PUBSUB NUMSUB")
            .pop()
            .expect("one channel in the answer");
        count
    }

    /// The index of the master that owns `key`'s hash slot.
    ///
    /// # Panics
    /// No node answers, or the slot has no master among this cluster's nodes.
    pub async fn master_of(&self, key: &str) -> usize {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                continue;
            }
            let mut conn = self.node_connection(i).await;
            let slot: i64 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query_async(&mut conn)
                .await
                .expect("CLUSTER KEYSLOT");
            let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(&mut conn)
                .await
                .expect("CLUSTER SLOTS");
            for range in slots {
                let redis::Value::Array(parts) = range else {
                    continue;
                };
                let (Some(redis::Value::Int(start)), Some(redis::Value::Int(end))) =
                    (parts.first(), parts.get(1))
                else {
                    continue;
                };
                if !(*start..=*end).contains(&slot) {
                    continue;
                }
                if let Some(redis::Value::Array(master)) = parts.get(2)
                    && let Some(redis::Value::Int(port)) = master.get(1)
                {
                    return self
                        .nodes
                        .iter()
                        .position(|n| i64::from(n.port) == *port)
                        .expect("the master is one of this cluster's nodes");
                }
            }
            panic!("no master for slot {slot}");
        }
        panic!("no Redis Cluster node is running");
    }

    /// Moves `key`'s hash slot, with its keys, from its master to node `to`: the manual
    /// resharding steps (`IMPORTING` / `MIGRATING`, `MIGRATE` of every key, `SETSLOT … NODE`
    /// on every node).
    ///
    /// # Panics
    /// A step fails.
    pub async fn move_slot(&self, key: &str, to: usize) {
        let from = self.master_of(key).await;
        assert_ne!(from, to, "node {to} already owns the slot of {key}");
        let mut source = self.node_connection(from).await;
        let mut target = self.node_connection(to).await;
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut source)
            .await
            .expect("CLUSTER KEYSLOT");
        let id = |conn: &mut redis::aio::MultiplexedConnection| {
            let mut conn = conn.clone();
            async move {
                redis::cmd("CLUSTER")
                    .arg("MYID")
                    .query_async::<String>(&mut conn)
                    .await
                    .expect("CLUSTER MYID")
            }
        };
        let (source_id, target_id) = (id(&mut source).await, id(&mut target).await);
        let setslot = |conn: &mut redis::aio::MultiplexedConnection, how: &str, node: &str| {
            let mut conn = conn.clone();
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SETSLOT").arg(slot).arg(how).arg(node);
            async move {
                cmd.query_async::<()>(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("CLUSTER SETSLOT: {e}"));
            }
        };
        setslot(&mut target, "IMPORTING", &source_id).await;
        setslot(&mut source, "MIGRATING", &target_id).await;
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query_async(&mut source)
                .await
                .expect("CLUSTER GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.nodes[to].port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query_async::<()>(&mut source)
                .await
                .expect("MIGRATE");
        }
        setslot(&mut target, "NODE", &target_id).await;
        setslot(&mut source, "NODE", &target_id).await;
        for i in 0..self.nodes.len() {
            if i != from && i != to {
                let mut other = self.node_connection(i).await;
                setslot(&mut other, "NODE", &target_id).await;
            }
        }
        crate::assert_eventually!(
            self.master_of(key).await == to,
            "the slot of {key} did not move to node {to}"
        );
    }

    /// Waits until every running node reports `cluster_state:ok`.
    ///
    /// # Panics
    /// Some node does not within a generous [`TIMEOUT`] multiple.
    pub async fn wait_ok(&self) {
        let deadline = std::time::Instant::now() + TIMEOUT * 4;
        for (i, node) in self.nodes.iter().enumerate() {
            if node.child.is_none() {
                continue;
            }
            loop {
                let state = async {
                    let mut conn = redis::Client::open(node.url())
                        .ok()?
                        .get_multiplexed_async_connection()
                        .await
                        .ok()?;
                    redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async::<String>(&mut conn)
                        .await
                        .ok()
                };
                let ok = tokio::time::timeout(Duration::from_secs(1), state)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|info| info.contains("cluster_state:ok"));
                if ok {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "Redis Cluster node {i} never reported cluster_state:ok"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Kills node `i` (SIGKILL) and waits until its port is closed.
    ///
    /// # Panics
    /// It still answers after [`TIMEOUT`].
    pub async fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill().await;
        }
        let addr = self.nodes[i].addr();
        crate::assert_eventually!(
            !redis_answers(addr).await,
            "Redis Cluster node {i} still answers"
        );
    }

    /// Starts node `i` (again) on its port, with its cluster config file: it rejoins the
    /// cluster with the slots it had (and no data, as nothing is persisted).
    ///
    /// # Panics
    /// `redis-server` is missing or does not answer within [`TIMEOUT`].
    pub async fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(
            node.child.is_none(),
            "Redis Cluster node {i} is already running"
        );
        let config_file = self.dir.join(format!("nodes-{}.conf", node.port));
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &node.port.to_string()])
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(&config_file)
            .args([
                "--cluster-node-timeout",
                &CLUSTER_NODE_TIMEOUT_MS.to_string(),
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        node.child = Some(child);
        let addr = node.addr();
        crate::assert_eventually!(
            redis_answers(addr).await,
            "Redis Cluster node on port {} did not answer",
            addr.port()
        );
    }
}

impl Drop for OwnRedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A spare port whose cluster bus port (port + 10000) is spare too.
async fn cluster_port() -> u16 {
    loop {
        let port = spare_port().await;
        let Some(bus) = port.checked_add(10_000) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", bus)).await.is_ok() {
            return port;
        }
    }
}

/// The `hubcast` binary: `$HUBCAST_BIN`, else `target/debug/hubcast` of this workspace
/// (built by `cargo test` / `cargo nextest run` for the workspace).
pub fn hubcast_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("HUBCAST_BIN") {
        return bin.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("debug/hubcast")
}

/// A `hubcast` process in a cluster; killed when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    endpoint: String,
    grpc_addr: SocketAddr,
}

impl NodeProcess {
    /// Starts `hubcast` on ephemeral ports with [`PRIMARY_KEY`], joined to the cluster on
    /// `redis_url` under `prefix`, and waits for its connection string.
    ///
    /// # Panics
    /// The binary is missing or does not start within a generous [`TIMEOUT`] multiple.
    pub async fn start(redis_url: &str, prefix: &str, lease: Duration) -> Self {
        let bin = hubcast_bin();
        let grpc_addr = SocketAddr::from(([127, 0, 0, 1], spare_port().await));
        let mut child = Command::new(&bin)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--grpc-listen",
                &grpc_addr.to_string(),
            ])
            .args(["--access-key", PRIMARY_KEY, "--redis", redis_url])
            .args(["--redis-prefix", prefix])
            .args(["--cluster-lease", &format!("{}s", lease.as_secs().max(1))])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let endpoint = tokio::time::timeout(TIMEOUT * 4, async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(rest) = line.trim().strip_prefix("Endpoint=") {
                    return rest.split(';').next().map(str::to_owned);
                }
            }
            None
        })
        .await
        .expect("hubcast did not print its connection string in time")
        .expect("hubcast exited before printing its connection string");
        // Keep reading so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            endpoint,
            grpc_addr,
        }
    }

    /// The gRPC address (control plane, event stream).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The endpoint (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A client URL for `hub` with a token for this node.
    pub fn url(&self, hub: &str, user: Option<&str>, groups: &[&str]) -> String {
        let request = hubcast_auth::TokenRequest {
            hub: hub.to_owned(),
            user_id: user.map(str::to_owned),
            roles: Vec::new(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            ttl: Duration::from_secs(3600),
        };
        let token = hubcast_auth::mint_client_token(PRIMARY_KEY, &self.endpoint, &request);
        hubcast_auth::client_url(&self.endpoint, hub, &token)
    }

    /// Kills the process abruptly (SIGKILL): no goodbye to Redis or the other nodes.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill hubcast");
    }

    /// Freezes the process (SIGSTOP): its sockets stay open, so Redis still counts it as
    /// subscribed, but it answers nothing and stops renewing its lease — a hung node.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        signal(&self.child, name);
    }
}

/// Sends signal `name` (`STOP`, `CONT`) to a running child process.
fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("the process is running");
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed: {status}");
}
