//! Memory bounds, measured on the real `hubcast` binary (a separate process, so its RSS is
//! its own): waves of clients stop reading while a publisher keeps sending large messages to
//! their group. The outbox limit closes each stalled client (1013) instead of buffering for
//! it, so the server's RSS stays within a fixed budget while the load offered to the stalled
//! clients is many times that budget.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hubcast_auth::{TokenRequest, client_url, mint_client_token};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const KEY: &str = "memory-bound-test-access-key-0123456789";
const OUTBOX_BYTES: usize = 256 * 1024;
const STALLED_PER_WAVE: usize = 25;
const WAVES: usize = 8;
const MESSAGE_BYTES: usize = 64 * 1024;
/// Messages per second from the publisher: 6.4 MB/s, under the default rate limits, and per
/// wave more than a stalled client's outbox plus the largest kernel send buffer (4 MiB).
const PUBLISH_RATE: u64 = 100;
/// RSS growth allowed over the baseline. Outboxes alone could hold
/// 2 waves x 25 x 256 KiB = 12.5 MiB; the rest is allocator and socket slack.
const BUDGET_KIB: u64 = 64 * 1024;

/// The server process; killed when dropped so a failing test leaves nothing behind.
struct Hubcast {
    child: Child,
    endpoint: String,
}

impl Drop for Hubcast {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Hubcast {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("hubcast-memory-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("hubcast.toml");
        std::fs::write(
            &config,
            format!("[client]\noutbox_bytes = {OUTBOX_BYTES}\n"),
        )
        .expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_hubcast"))
            .args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
            .args(["--access-key", KEY, "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hubcast");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the connection string");
        let endpoint = line
            .trim()
            .strip_prefix("Endpoint=")
            .and_then(|rest| rest.split(';').next())
            .unwrap_or_else(|| panic!("no connection string: {line:?}"))
            .to_owned();
        Self { child, endpoint }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line")
    }

    fn url(&self, user: &str, roles: &[&str], groups: &[&str]) -> String {
        let request = TokenRequest {
            user_id: Some(user.to_owned()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..TokenRequest::new("mem")
        };
        client_url(
            &self.endpoint,
            "mem",
            &mint_client_token(KEY, &self.endpoint, &request),
        )
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects with a small receive buffer, so that what a client does not read piles up in
/// the server (where the outbox limit must catch it) rather than in the kernel.
async fn connect(url: &str) -> Ws {
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("json.webpubsub.azure.v1"),
    );
    let authority = request
        .uri()
        .authority()
        .expect("authority")
        .as_str()
        .to_owned();
    let work = async {
        let addr = tokio::net::lookup_host(&authority)
            .await
            .expect("resolve")
            .next()
            .expect("an address");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("TCP connect");
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .expect("upgrade")
            .0
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .expect("connect timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_stays_bounded_while_many_clients_stop_reading() {
    let server = Hubcast::start();
    let mut publisher = connect(&server.url("pub", &["webpubsub.sendToGroup"], &[])).await;
    // Warm up: connections, buffers and the allocator reach their steady size.
    let warm: Vec<Ws> = futures_util::future::join_all((0..STALLED_PER_WAVE).map(|i| {
        let url = server.url(&format!("warm{i}"), &[], &["g"]);
        async move { connect(&url).await }
    }))
    .await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = server.rss_kib();

    let data = "x".repeat(MESSAGE_BYTES);
    let frame = serde_json::json!({
        "type": "sendToGroup", "group": "g", "dataType": "text", "data": data, "noEcho": true,
    })
    .to_string();
    let mut peak = baseline;
    let mut sent = 0u64;
    let mut offered_bytes = 0u64;
    let mut previous_wave: Vec<Ws> = Vec::new();
    for wave in 0..WAVES {
        // New clients join the group at connect and never read a byte.
        let stalled: Vec<Ws> = futures_util::future::join_all((0..STALLED_PER_WAVE).map(|i| {
            let url = server.url(&format!("stalled{wave}-{i}"), &[], &["g"]);
            async move { connect(&url).await }
        }))
        .await;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(1500) {
            tokio::time::timeout(
                Duration::from_secs(5),
                publisher.send(Message::text(frame.clone())),
            )
            .await
            .expect("the publisher is never blocked by stalled clients")
            .expect("publish");
            sent += 1;
            offered_bytes += (MESSAGE_BYTES * STALLED_PER_WAVE) as u64;
            if sent.is_multiple_of(10) {
                peak = peak.max(server.rss_kib());
            }
            tokio::time::sleep(Duration::from_millis(1000 / PUBLISH_RATE)).await;
        }
        // The previous wave's sockets are dropped now; this wave's stay open, unread.
        drop(std::mem::replace(&mut previous_wave, stalled));
    }
    let growth = peak.saturating_sub(baseline);
    let offered_kib = offered_bytes / 1024;
    eprintln!(
        "baseline {baseline} KiB, peak {peak} KiB, growth {growth} KiB; offered to stalled \
         clients {offered_kib} KiB in {sent} messages"
    );
    assert!(
        offered_kib > 4 * BUDGET_KIB,
        "the test must offer far more than the budget to mean anything: {offered_kib} KiB"
    );
    assert!(
        growth < BUDGET_KIB,
        "RSS grew by {growth} KiB (baseline {baseline}, peak {peak}), more than the \
         {BUDGET_KIB} KiB budget, while {offered_kib} KiB were offered to stalled clients"
    );

    // The stalled clients were really overflowing: reading one now shows the data that
    // fitted, then the slow-consumer close (1013) that bounded it.
    let mut last = previous_wave.pop().expect("a stalled client");
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = last.next().await {
            match frame {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(e) => panic!("stalled client's socket failed before a close frame: {e}"),
            }
        }
        None
    })
    .await
    .expect("close within 10 s");
    assert_eq!(
        close,
        Some(1013),
        "a stalled client is closed as a slow consumer"
    );

    // The server still serves: a fresh client's ping is answered.
    let mut fresh = connect(&server.url("fresh", &[], &[])).await;
    fresh
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("ping");
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(msg)) = fresh.next().await {
            if msg.to_text().is_ok_and(|t| t.contains("pong")) {
                return true;
            }
        }
        false
    })
    .await
    .expect("pong within 10 s");
    assert!(answered, "a fresh client gets its pong");
    drop(previous_wave);
    let _ = publisher.close(None).await;
}
