//! Cross-node fan-out against single-node fan-out, in one run: throughput (deliveries per
//! second to a group) and added latency (one sender, one receiver) when the receivers are on
//! another node than the sender, through the real Redis at 127.0.0.1:6379.
//!
//! Run with: `cargo bench -p hubcast-integration-tests --bench cluster`
//! (`HUBCAST_BENCH_RECEIVERS`, `HUBCAST_BENCH_MESSAGES` and `HUBCAST_BENCH_SAMPLES` change the
//! sizes; defaults 200, 500 and 300.)
//!
//! Everything runs over real sockets on loopback: a simple WebSocket client publishes 2 KB
//! text messages to a group with `sendToGroup`; the receivers are simple clients (raw frames,
//! nothing to parse) that count what they get. "single" puts sender and receivers on one
//! node without Redis; "cluster" puts the sender on node A and the receivers on node B of a
//! two-node cluster. The client side costs the same in both, so the ratio is the server's.
//! The load is bounded (a fixed count of messages and connections) and stops by itself.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use hubcast_integration_tests::cluster::TestCluster;
use hubcast_integration_tests::{JsonClient, SEND_ROLE, TestServer, request, try_connect};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const HUB: &str = "bench";
const PAYLOAD: usize = 2048;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A receiver task: counts `expected` frames, returns when it has them.
async fn receiver(url: String, expected: usize) -> tokio::task::JoinHandle<()> {
    let (mut ws, _) = try_connect(request(&url, &[], None))
        .await
        .expect("receiver connects");
    tokio::spawn(async move {
        let mut got = 0;
        while got < expected {
            match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
                Ok(Some(Ok(Message::Text(_) | Message::Binary(_)))) => got += 1,
                Ok(Some(Ok(_))) => {}
                other => panic!("receiver stopped after {got}/{expected}: {other:?}"),
            }
        }
    })
}

struct Result {
    deliveries_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Sends `messages` to a group of `receivers` on `to`, from a client on `from`; then measures
/// send-to-receive latency for `samples` single messages.
async fn run(
    from: &TestServer,
    to: &TestServer,
    receivers: usize,
    messages: usize,
    samples: usize,
) -> Result {
    let group = "g";
    let mut tasks = Vec::with_capacity(receivers);
    for _ in 0..receivers {
        tasks.push(receiver(to.url(HUB, None, &[], &[group]), messages).await);
    }
    let mut sender = JsonClient::connect(&from.url(HUB, Some("sender"), &[SEND_ROLE], &[])).await;
    // Connections are registered before the upgrade is answered, and `to` is subscribed
    // (the cluster waited for it), so every receiver is reachable from here on.
    let data = "x".repeat(PAYLOAD);
    let started = Instant::now();
    for _ in 0..messages {
        sender
            .send(json!({"type":"sendToGroup","group":group,"dataType":"text","data":data}))
            .await;
    }
    for t in tasks {
        t.await.expect("receiver");
    }
    let elapsed = started.elapsed();
    let deliveries_per_sec = (receivers * messages) as f64 / elapsed.as_secs_f64();

    // Latency: one probe receiver, one message at a time.
    let (mut probe, _) = try_connect(request(&to.url(HUB, None, &[], &["probe"]), &[], None))
        .await
        .expect("probe connects");
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples + 20 {
        let t0 = Instant::now();
        sender
            .send(json!({"type":"sendToGroup","group":"probe","dataType":"text","data":data}))
            .await;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), probe.next()).await {
                Ok(Some(Ok(Message::Text(_)))) => break,
                Ok(Some(Ok(_))) => {}
                other => panic!("probe stopped: {other:?}"),
            }
        }
        if i >= 20 {
            lat.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    let _ = probe.close(None).await;
    lat.sort_by(f64::total_cmp);
    Result {
        deliveries_per_sec,
        p50_us: lat[lat.len() / 2],
        p99_us: lat[(lat.len() * 99 / 100).min(lat.len() - 1)],
    }
}

fn main() {
    let receivers = env("HUBCAST_BENCH_RECEIVERS", 200);
    let messages = env("HUBCAST_BENCH_MESSAGES", 500);
    let samples = env("HUBCAST_BENCH_SAMPLES", 300);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let single = TestServer::start_single_with(|_| {}).await;
        let cluster = TestCluster::start("bench", 2).await;
        println!(
            "{receivers} receivers, {messages} messages of {PAYLOAD} B to one group, then \
             {samples} latency samples"
        );
        // Alternate the variants twice and keep each one's best run: the machine is shared.
        let mut best: [Option<Result>; 2] = [None, None];
        for round in 0..2 {
            for (i, name) in ["single", "cluster"].iter().enumerate() {
                let r = if i == 0 {
                    run(&single, &single, receivers, messages, samples).await
                } else {
                    run(cluster.node(0), cluster.node(1), receivers, messages, samples).await
                };
                println!(
                    "round {round} {name:>7}: {:>10.0} deliveries/s, latency p50 {:>7.0} µs, p99 {:>7.0} µs",
                    r.deliveries_per_sec, r.p50_us, r.p99_us
                );
                let keep = best[i]
                    .as_ref()
                    .is_none_or(|b| r.deliveries_per_sec > b.deliveries_per_sec);
                if keep {
                    best[i] = Some(r);
                }
            }
        }
        let [Some(s), Some(c)] = best else { unreachable!() };
        println!();
        println!("| variant | deliveries/s | latency p50 µs | latency p99 µs |");
        println!("|---|---:|---:|---:|");
        println!("| single node | {:.0} | {:.0} | {:.0} |", s.deliveries_per_sec, s.p50_us, s.p99_us);
        println!(
            "| cross-node (Redis) | {:.0} ({:.2}x) | {:.0} (+{:.0}) | {:.0} (+{:.0}) |",
            c.deliveries_per_sec,
            c.deliveries_per_sec / s.deliveries_per_sec,
            c.p50_us,
            c.p50_us - s.p50_us,
            c.p99_us,
            c.p99_us - s.p99_us
        );
    });
}
