//! Multi-node harness: several [`TestServer`]s sharing one real Redis under a key prefix of
//! their own, a Redis of a test's own on a spare port (to stop and restart it), and the real
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
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(
                TestServer::start_single_with(|c| {
                    c.cluster.redis_url = Some(redis_url.to_owned());
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
}

impl NodeProcess {
    /// Starts `hubcast` on ephemeral ports with [`PRIMARY_KEY`], joined to the cluster on
    /// `redis_url` under `prefix`, and waits for its connection string.
    ///
    /// # Panics
    /// The binary is missing or does not start within a generous [`TIMEOUT`] multiple.
    pub async fn start(redis_url: &str, prefix: &str, lease: Duration) -> Self {
        let bin = hubcast_bin();
        let mut child = Command::new(&bin)
            .args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
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
        Self { child, endpoint }
    }

    /// The endpoint (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A client URL for `hub` with a token for this node.
    pub fn url(&self, hub: &str, user: Option<&str>, groups: &[&str]) -> String {
        let request = hubcast_server::auth::TokenRequest {
            hub: hub.to_owned(),
            user_id: user.map(str::to_owned),
            roles: Vec::new(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            ttl: Duration::from_secs(3600),
        };
        let token = hubcast_server::auth::mint_client_token(PRIMARY_KEY, &self.endpoint, &request);
        hubcast_server::auth::client_url(&self.endpoint, hub, &token)
    }

    /// Kills the process abruptly (SIGKILL): no goodbye to Redis or the other nodes.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill hubcast");
    }
}
