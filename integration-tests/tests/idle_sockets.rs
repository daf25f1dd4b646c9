//! Sockets that never send a byte (README "Limits": `handshake_timeout`,
//! `max_pending_sockets`): on both listeners, with and without TLS, they are closed once the
//! handshake timeout has passed since accept; more of them than the cap never keep a fresh
//! client out nor grow the server's descriptors beyond the cap; a gRPC peer that stops
//! answering pings is closed; and a process out of file descriptors waits without spinning
//! and serves again once descriptors are free, or frees some itself from its idle sockets.
//!
//! Descriptor counts and CPU time are read from `/proc/<pid>` of a real `hubcast` process
//! (`$HUBCAST_BIN`), started under `prlimit` where the test needs a small descriptor table.
//! The in-process tests are single-node by nature: listeners are each node's own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hubcast_integration_tests::certs::SelfSigned;
use hubcast_integration_tests::cluster::{hubcast_bin, spare_port};
use hubcast_integration_tests::{JSON_SUBPROTOCOL, PRIMARY_KEY, TIMEOUT, TestServer, request};
use hubcast_server::limits::LimitKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long a socket that is expected to be closed may take, at most, to see it closed.
const CLOSE_WITHIN: Duration = Duration::from_secs(4);

/// Reads from `stream` (discarding what comes) until the server closes it; `None` if it is
/// still open after `limit`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_sends_nothing_is_closed_after_the_handshake_timeout_on_the_http_listener() {
    let server =
        TestServer::start_single_with(|c| c.limits.handshake_timeout = Duration::from_secs(1))
            .await;
    let mut idle = TcpStream::connect(server.addr()).await.expect("connect");
    let after = closed_within(&mut idle, CLOSE_WITHIN)
        .await
        .expect("an HTTP socket that sent nothing is still open 4 s after a 1 s timeout");
    assert!(
        after >= Duration::from_millis(800),
        "closed after {after:?}: before the timeout"
    );
    assert!(server.limit_counters().get(LimitKind::HandshakeTimeout) >= 1);
    // A client that speaks right away is served.
    let _ok = server.json_client("chat", Some("ok"), &[], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_sends_nothing_is_closed_after_the_handshake_timeout_on_the_grpc_listener() {
    let server =
        TestServer::start_single_with(|c| c.limits.handshake_timeout = Duration::from_secs(1))
            .await;
    let mut idle = TcpStream::connect(server.grpc_addr())
        .await
        .expect("connect");
    let after = closed_within(&mut idle, CLOSE_WITHIN)
        .await
        .expect("a gRPC socket that sent nothing is still open 4 s after a 1 s timeout");
    assert!(
        after >= Duration::from_millis(800),
        "closed after {after:?}: before the timeout"
    );
    // A peer that sends only part of the HTTP/2 preface is no better off.
    let mut partial = TcpStream::connect(server.grpc_addr())
        .await
        .expect("connect");
    partial
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("write");
    closed_within(&mut partial, CLOSE_WITHIN)
        .await
        .expect("a gRPC socket that sent part of its preface is still open");
    assert!(server.limit_counters().get(LimitKind::HandshakeTimeout) >= 2);
    // A real client is served.
    let sdk = server.service_client().await;
    let exists = sdk
        .user_exists("chat", "nobody")
        .await
        .expect("the control plane answers");
    assert!(!exists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_sends_nothing_after_its_handshake_is_closed_on_both_listeners() {
    let cert = SelfSigned::new("tls");
    let tls = cert.config();
    let server = TestServer::start_single_with(|c| {
        c.tls = Some(tls);
        c.limits.handshake_timeout = Duration::from_secs(1);
    })
    .await;
    // The handshake counts against the timeout, so what is left of it after a handshake
    // is all a client gets to send its first request (HTTP) or its preface (gRPC).
    let mut http = cert.handshake(server.addr(), b"http/1.1").await;
    let mut grpc = cert.handshake(server.grpc_addr(), b"h2").await;
    let (http, grpc) = tokio::join!(
        closed_within(&mut http, CLOSE_WITHIN),
        closed_within(&mut grpc, CLOSE_WITHIN)
    );
    assert!(http.is_some(), "the HTTPS socket is still open");
    assert!(grpc.is_some(), "the gRPC TLS socket is still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_peer_that_sends_its_preface_and_ignores_pings_is_closed_after_the_idle_timeout() {
    let server = TestServer::start_single_with(|c| {
        c.client.keepalive_interval = Duration::from_secs(1);
        c.limits.idle_timeout = Duration::from_secs(2);
        // Not the handshake deadline: the preface is in at once.
        c.limits.handshake_timeout = Duration::from_secs(30);
    })
    .await;
    let mut peer = TcpStream::connect(server.grpc_addr())
        .await
        .expect("connect");
    // The client connection preface: the magic and an empty SETTINGS frame. Then nothing:
    // no SETTINGS acknowledgement, no PING acknowledgement.
    peer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("write");
    peer.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .expect("write");
    let after = closed_within(&mut peer, Duration::from_secs(6))
        .await
        .expect("a gRPC peer that answers no ping is still open 6 s after a 2 s idle timeout");
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}: before any ping could go unanswered"
    );
    assert_eq!(
        server.limit_counters().get(LimitKind::HandshakeTimeout),
        0,
        "closed by the keep-alive, not the handshake deadline"
    );
}

// === a real `hubcast` process ===

/// A `hubcast` process on loopback ports, killed when dropped.
struct Hubcast {
    child: Child,
    http: SocketAddr,
    grpc: SocketAddr,
    dir: PathBuf,
}

impl Hubcast {
    /// Starts `hubcast` with `config` (TOML), under `prlimit --nofile=N:N` when `nofile`
    /// is given, and waits until `/api/health` answers.
    async fn start(name: &str, config: &str, nofile: Option<u32>) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "hubcast-idle-sockets-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config_file = dir.join("hubcast.toml");
        std::fs::write(&config_file, config).expect("write config");
        let http = SocketAddr::from(([127, 0, 0, 1], spare_port().await));
        let grpc = SocketAddr::from(([127, 0, 0, 1], spare_port().await));
        let bin = hubcast_bin();
        let mut command = match nofile {
            Some(n) => {
                // prlimit sets the limit and execs hubcast: same process id.
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let log = std::fs::File::create(dir.join("stderr.log")).expect("log file");
        let child = command
            .arg("--config")
            .arg(&config_file)
            .args(["--listen", &http.to_string()])
            .args(["--grpc-listen", &grpc.to_string()])
            .args(["--access-key", PRIMARY_KEY])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let hubcast = Self {
            child,
            http,
            grpc,
            dir,
        };
        let deadline = Instant::now() + TIMEOUT * 4;
        while health(http).await != Some(200) {
            assert!(
                Instant::now() < deadline,
                "hubcast did not answer /api/health in time; its log: {}",
                hubcast.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        hubcast
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("hubcast is running")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Open file descriptors of the process.
    fn descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/<pid>/fd")
            .count()
    }

    /// CPU time the process has used (user + system), from `/proc/<pid>/stat`.
    fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read /proc/<pid>/stat");
        // Fields after the command name (which may hold spaces) start at field 3 (state);
        // utime and stime are fields 14 and 15.
        let after = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second())
    }

    /// A client URL for `hub` with a token for this process.
    fn url(&self, hub: &str, user: &str) -> String {
        let endpoint = format!("http://{}", self.http);
        let token = hubcast_auth::mint_client_token(
            PRIMARY_KEY,
            &endpoint,
            &hubcast_auth::TokenRequest {
                hub: hub.to_owned(),
                user_id: Some(user.to_owned()),
                roles: Vec::new(),
                groups: Vec::new(),
                ttl: Duration::from_secs(3600),
            },
        );
        hubcast_auth::client_url(&endpoint, hub, &token)
    }

    /// `GET /metrics`.
    async fn metrics(&self) -> String {
        get(self.http, "/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_else(|| panic!("/metrics did not answer; log: {}", self.log()))
    }
}

impl Drop for Hubcast {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `GET path` on a fresh connection: status and body, or `None` if there is no complete
/// answer within two seconds.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    tokio::time::timeout(Duration::from_secs(2), async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text.split(' ').nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    })
    .await
    .ok()
    .flatten()
}

async fn health(addr: SocketAddr) -> Option<u16> {
    get(addr, "/api/health").await.map(|(status, _)| status)
}

/// The value of the series `line_start` (name and labels) in Prometheus text.
fn sample(metrics: &str, line_start: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
}

/// Opens `n` sockets to `addr` that send nothing, and counts those the server closes.
struct IdleSockets {
    closed: Arc<AtomicUsize>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl IdleSockets {
    async fn open(addrs: &[(SocketAddr, usize)]) -> Self {
        let closed = Arc::new(AtomicUsize::new(0));
        let mut readers = Vec::new();
        for &(addr, n) in addrs {
            for _ in 0..n {
                let mut stream = TcpStream::connect(addr).await.expect("connect");
                let closed = closed.clone();
                readers.push(tokio::spawn(async move {
                    if closed_within(&mut stream, Duration::from_secs(60))
                        .await
                        .is_some()
                    {
                        closed.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
        }
        Self { closed, readers }
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::Relaxed)
    }
}

impl Drop for IdleSockets {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_beyond_the_cap_neither_keep_a_fresh_client_out_nor_grow_descriptors() {
    const CAP: usize = 40;
    let hubcast = Hubcast::start(
        "cap",
        // A long handshake timeout: only the cap closes the idle sockets in this test.
        &format!("[limits]\nmax_pending_sockets = {CAP}\nhandshake_timeout = 120\n"),
        None,
    )
    .await;
    let before = hubcast.descriptors();
    let idle = IdleSockets::open(&[(hubcast.http, 200), (hubcast.grpc, 100)]).await;
    let deadline = Instant::now() + TIMEOUT * 2;
    while idle.closed() < 300 - CAP {
        assert!(
            Instant::now() < deadline,
            "only {} of 300 idle sockets closed with a cap of {CAP}; descriptors {} (before {before})",
            idle.closed(),
            hubcast.descriptors()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let during = hubcast.descriptors();
    assert!(
        during <= before + CAP + 5,
        "{during} descriptors with 300 idle sockets open (before: {before}, cap {CAP})"
    );
    // A fresh client gets in: health, and a WebSocket upgrade.
    assert_eq!(health(hubcast.http).await, Some(200), "health answers");
    let (mut ws, response) = tokio::time::timeout(
        TIMEOUT,
        hubcast_integration_tests::try_connect(request(
            &hubcast.url("chat", "fresh"),
            &[JSON_SUBPROTOCOL],
            None,
        )),
    )
    .await
    .expect("upgrade in time")
    .expect("a WebSocket upgrade from a fresh client succeeds");
    assert_eq!(response.status(), 101);
    let _ = futures_util::StreamExt::next(&mut ws).await;
    let metrics = hubcast.metrics().await;
    let refused = sample(
        &metrics,
        "hubcast_limit_refusals_total{limit=\"pending_sockets\"}",
    )
    .expect("pending_sockets refusals on /metrics");
    assert!(refused >= (300 - CAP) as f64, "{refused} counted");
    let pending: f64 = ["http", "grpc"]
        .iter()
        .map(|l| {
            sample(
                &metrics,
                &format!("hubcast_pending_sockets{{listener=\"{l}\"}}"),
            )
            .expect("pending sockets gauge")
        })
        .sum();
    assert!(pending <= CAP as f64, "{pending} pending sockets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_that_fill_the_descriptor_table_make_room_for_a_fresh_client() {
    // The cap is above what the descriptor table holds, so `accept` runs out first: the
    // server then closes its oldest idle socket to take the next one.
    let hubcast = Hubcast::start(
        "emfile-idle",
        "[limits]\nmax_pending_sockets = 10000\nhandshake_timeout = 120\n",
        Some(64),
    )
    .await;
    let _idle = IdleSockets::open(&[(hubcast.http, 80), (hubcast.grpc, 40)]).await;
    let deadline = Instant::now() + TIMEOUT * 2;
    loop {
        if health(hubcast.http).await == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health does not answer with the table full of idle sockets; log: {}",
            hubcast.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = hubcast.metrics().await;
    assert!(
        sample(
            &metrics,
            "hubcast_limit_refusals_total{limit=\"pending_sockets\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "idle sockets were closed to free descriptors"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_descriptor_table_is_waited_out_without_spinning_and_served_again_once_freed() {
    const NOFILE: u32 = 64;
    let hubcast = Hubcast::start("emfile-busy", "", Some(NOFILE)).await;
    // Fill the table with WebSocket connections (they are past their handshake: nothing
    // the server may close to make room) until an upgrade no longer completes.
    let mut clients = Vec::new();
    for i in 0..NOFILE * 2 {
        let url = hubcast.url("chat", &format!("u{i}"));
        let upgrade = tokio::time::timeout(
            Duration::from_secs(1),
            hubcast_integration_tests::try_connect(request(&url, &[JSON_SUBPROTOCOL], None)),
        )
        .await;
        match upgrade {
            Ok(Ok((ws, _))) => clients.push(ws),
            // The upgrade times out in the backlog, or is reset: an accepted socket that
            // has not sent its request yet is the one closed to free a descriptor.
            _ => break,
        }
    }
    assert!(
        clients.len() < (NOFILE * 2) as usize,
        "{} WebSockets open under a limit of {NOFILE} descriptors",
        clients.len()
    );
    // One connection waits in each listener's backlog: every accept of it fails (EMFILE).
    let _waiting_http = TcpStream::connect(hubcast.http).await.expect("connect");
    let _waiting_grpc = TcpStream::connect(hubcast.grpc).await.expect("connect");
    let window = Duration::from_secs(2);
    let cpu_before = hubcast.cpu_time();
    tokio::time::sleep(window).await;
    let cpu = hubcast.cpu_time() - cpu_before;
    assert!(
        cpu < Duration::from_millis(400),
        "{cpu:?} of CPU in {window:?} with the descriptor table full: the accept loops spin"
    );
    // Free the table: both listeners serve again.
    drop(clients);
    let deadline = Instant::now() + TIMEOUT * 2;
    while health(hubcast.http).await != Some(200) {
        assert!(
            Instant::now() < deadline,
            "health does not answer once descriptors are free; log: {}",
            hubcast.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", hubcast.grpc))
        .expect("valid URI")
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .connect()
        .await
        .expect("gRPC connects once descriptors are free");
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("gRPC health answers once descriptors are free");
    assert_eq!(
        status.into_inner().status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let log = hubcast.log();
    assert!(
        log.matches("accept failed").count() <= 4,
        "the accept failures are logged once per burst, not each time: {log}"
    );
}
