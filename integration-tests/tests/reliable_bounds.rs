//! A reliable connection cannot be made to hold memory without bound. The attack: a
//! `json.reliable` or `protobuf.reliable` client joins a busy group, stops reading its socket
//! and acknowledges `sequenceId` 18446744073709551615 over and over. An acknowledgement of
//! messages the server has not written to the socket releases nothing, so the client's
//! unacknowledged buffer fills and the connection is closed for good (1008, counted as
//! `unacked_limit`), while the `hubcast` process's RSS stays within a budget far below the
//! traffic published to the group.
//!
//! Measured on the real binary, a process of its own, so its RSS is the server's alone
//! (server/tests/memory_bound.rs does the same for clients that merely stop reading).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Empty};
use hubcast_auth::{TokenRequest, client_url, mint_client_token};
use hubcast_integration_tests::cluster::{hubcast_bin, spare_port};
use hubcast_integration_tests::{
    JSON_RELIABLE_SUBPROTOCOL, JSON_SUBPROTOCOL, PRIMARY_KEY, SEND_ROLE, TIMEOUT, Ws, request,
    try_connect, try_connect_with_recv_buffer,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

const HUB: &str = "relbound";
const GROUP: &str = "busy";
const PROTOBUF_RELIABLE_SUBPROTOCOL: &str = "protobuf.reliable.webpubsub.azure.v1";
/// The attackers' unacknowledged buffer (`client.unacked_max_bytes`).
const UNACKED_MAX_BYTES: usize = 1024 * 1024;
const MESSAGE_BYTES: usize = 64 * 1024;
/// 64 MiB published to the attackers' group in all.
const MESSAGES: usize = 1024;
/// RSS growth allowed over the baseline. The two buffers hold 1 MiB each, their queues share
/// those messages; the rest is the publisher's frames in flight and allocator slack. Before
/// acknowledgements were checked, the growth followed the traffic (some 60 MiB here).
const BUDGET_KIB: u64 = 24 * 1024;
/// The attack frames, as kept in `fuzz/regressions/`.
const JSON_ACK_ALL: &str = r#"{"type":"sequenceAck","sequenceId":18446744073709551615}"#;
const PROTOBUF_ACK_ALL: [u8; 13] = [
    0x42, 0x0b, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
];

/// The server process; killed when dropped, so a failing test leaves nothing behind.
struct Hubcast {
    child: Child,
    addr: SocketAddr,
    endpoint: String,
    dir: PathBuf,
}

impl Drop for Hubcast {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Hubcast {
    /// Starts `hubcast` with the attackers' small buffer and rate limits that let the
    /// publisher go as fast as it can, and waits until it answers `/api/health`.
    async fn start() -> Self {
        let port = spare_port().await;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let endpoint = format!("http://{addr}");
        let dir = std::env::temp_dir().join(format!(
            "hubcast-reliable-bounds-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("hubcast.toml");
        std::fs::write(
            &config,
            format!(
                "[client]\nunacked_max_bytes = {UNACKED_MAX_BYTES}\n\n\
                 [limits]\nmessages_per_second = 100000\nbytes_per_second = 1073741824\n"
            ),
        )
        .expect("write config");
        let bin = hubcast_bin();
        let child = Command::new(&bin)
            .args([
                "--listen",
                &addr.to_string(),
                "--grpc-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--endpoint",
                &endpoint,
                "--access-key",
                PRIMARY_KEY,
                "--config",
            ])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let server = Self {
            child,
            addr,
            endpoint,
            dir,
        };
        let deadline = tokio::time::Instant::now() + TIMEOUT * 4;
        while server.get("/api/health").await.map(|(status, _)| status) != Some(200) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "hubcast did not serve /api/health in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// A plain GET; `None` while nothing listens.
    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let stream = TcpStream::connect(self.addr).await.ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(connection);
        let request = http::Request::get(path)
            .header("host", self.addr.to_string())
            .body(Empty::<Bytes>::new())
            .expect("valid request");
        let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
            .await
            .ok()?
            .ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// The value of one series on `/metrics` (0 while it does not exist).
    async fn metric(&self, series: &str) -> f64 {
        let (status, text) = self.get("/metrics").await.expect("/metrics answers");
        assert_eq!(status, 200, "/metrics: {text}");
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("hubcast is running");
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line")
    }

    fn url(&self, user: &str, roles: &[&str], groups: &[&str]) -> String {
        let request = TokenRequest {
            user_id: Some(user.to_owned()),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            ..TokenRequest::new(HUB)
        };
        client_url(
            &self.endpoint,
            HUB,
            &mint_client_token(PRIMARY_KEY, &self.endpoint, &request),
        )
    }
}

/// A reliable client in the group that reads its `connected` message and then never reads
/// again; over a small kernel receive buffer, so what it does not read piles up in the
/// server rather than in the kernel. A task sends `attack` every few milliseconds until the
/// socket fails.
async fn attacker(server: &Hubcast, user: &str, subprotocol: &str, attack: Message) {
    let url = server.url(user, &[], &[GROUP]);
    let (ws, _) = try_connect_with_recv_buffer(request(&url, &[subprotocol], None), 4096)
        .await
        .expect("attacker upgrade");
    let (mut sink, mut stream) = ws.split();
    let connected = tokio::time::timeout(TIMEOUT, stream.next())
        .await
        .expect("connected within the timeout");
    assert!(
        matches!(connected, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{user}: connected message expected, got {connected:?}"
    );
    tokio::spawn(async move {
        // Keeps the read half alive (unread) for as long as the attack runs.
        let _stream = stream;
        loop {
            let sent = tokio::time::timeout(TIMEOUT, sink.send(attack.clone())).await;
            if !matches!(sent, Ok(Ok(()))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

/// Sends one message, which a stalled client must never hold up.
async fn publish(publisher: &mut Ws, frame: &Message) {
    tokio::time::timeout(TIMEOUT, publisher.send(frame.clone()))
        .await
        .expect("the publisher is never blocked by the attackers")
        .expect("publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledging_unsent_messages_neither_keeps_a_stalled_reliable_client_nor_grows_memory() {
    let server = Hubcast::start().await;
    let (mut publisher, _): (Ws, _) = try_connect(request(
        &server.url("publisher", &[SEND_ROLE], &[]),
        &[JSON_SUBPROTOCOL],
        None,
    ))
    .await
    .expect("publisher upgrade");
    let frame = Message::text(
        serde_json::json!({
            "type": "sendToGroup", "group": GROUP, "dataType": "text", "noEcho": true,
            "data": "x".repeat(MESSAGE_BYTES),
        })
        .to_string(),
    );

    // Warm up with the same traffic to nobody: buffers and the allocator reach their
    // steady size.
    for _ in 0..64 {
        publish(&mut publisher, &frame).await;
    }
    attacker(
        &server,
        "json-attacker",
        JSON_RELIABLE_SUBPROTOCOL,
        Message::text(JSON_ACK_ALL),
    )
    .await;
    attacker(
        &server,
        "protobuf-attacker",
        PROTOBUF_RELIABLE_SUBPROTOCOL,
        Message::binary(PROTOBUF_ACK_ALL.to_vec()),
    )
    .await;
    let baseline = server.rss_kib();

    let mut peak = baseline;
    for sent in 1..=MESSAGES {
        publish(&mut publisher, &frame).await;
        if sent.is_multiple_of(16) {
            peak = peak.max(server.rss_kib());
        }
    }
    // Every published message has been handled once a ping sent after them is answered.
    publisher
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("ping");
    // (Its `connected` message comes first: it has read nothing so far.)
    tokio::time::timeout(TIMEOUT * 4, async {
        while let Some(frame) = publisher.next().await {
            match frame.expect("the publisher's socket works") {
                Message::Text(text) if text.contains(r#""type":"pong""#) => return,
                _ => {}
            }
        }
        panic!("the publisher's socket ended");
    })
    .await
    .expect("the publisher's ping is answered");
    peak = peak.max(server.rss_kib());

    let growth = peak.saturating_sub(baseline);
    let offered_kib = (MESSAGES * MESSAGE_BYTES / 1024) as u64;
    eprintln!(
        "baseline {baseline} KiB, peak {peak} KiB, growth {growth} KiB; {offered_kib} KiB \
         published to the attackers' group"
    );
    assert!(
        offered_kib > 2 * BUDGET_KIB,
        "the test must publish far more than the budget to mean anything: {offered_kib} KiB"
    );
    assert!(
        growth < BUDGET_KIB,
        "RSS grew by {growth} KiB (baseline {baseline}, peak {peak}), more than the \
         {BUDGET_KIB} KiB budget, while {offered_kib} KiB were published to the group of \
         clients acknowledging messages they never read"
    );

    // Both attackers were closed for good on their unacknowledged buffer.
    let series = format!("hubcast_disconnects_total{{hub=\"{HUB}\",reason=\"unacked_limit\"}}");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let closed = server.metric(&series).await;
        if closed >= 2.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{closed} of the 2 attackers closed for their unacknowledged buffer ({series})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = publisher.close(None).await;
}
