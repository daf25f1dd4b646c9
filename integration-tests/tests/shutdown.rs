//! Graceful shutdown (STYLE.md §D): every client is told (`disconnected`, then a 1001 close)
//! and `run` returns within the grace period; afterwards nothing listens any more.

use std::time::Duration;

use hubcast_integration_tests::{JOIN_ROLE, SimpleClient, TestServer};
use tokio::net::TcpStream;

const HUB: &str = "bye";
const GRACE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_disconnects_every_client_with_1001_within_the_grace_period() {
    let server = TestServer::start_with(|config| config.shutdown_grace = GRACE).await;
    let addr = server.addr();

    let mut json_clients = Vec::new();
    for i in 0..5 {
        let mut client = server
            .json_client(HUB, Some(&format!("user{i}")), &[JOIN_ROLE], &[])
            .await;
        if i % 2 == 0 {
            client.join("evens").await;
        }
        json_clients.push(client);
    }
    let simple = SimpleClient::connect(&server.url(HUB, Some("raw"), &[], &["evens"])).await;
    let other_hub = server.json_client("elsewhere", Some("x"), &[], &[]).await;
    json_clients.push(other_hub);

    // Every client reads concurrently with the shutdown, as real clients would.
    let json_waits: Vec<_> = json_clients
        .into_iter()
        .map(|client| tokio::spawn(client.expect_close()))
        .collect();
    let simple_wait = tokio::spawn(simple.expect_close());

    let took = server.shutdown().await;
    assert!(
        took < GRACE,
        "run() took {took:?}, more than the {GRACE:?} grace period, although every client \
         answered the close promptly"
    );

    for (i, wait) in json_waits.into_iter().enumerate() {
        let closed = wait
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        assert_eq!(closed.code, 1001, "client {i}: {closed:?}");
        closed.expect_disconnected();
    }
    let closed = simple_wait
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    assert_eq!(closed.code, 1001, "simple client: {closed:?}");
    assert!(
        closed.frames.is_empty(),
        "simple clients get no system message: {closed:?}"
    );

    let refused = TcpStream::connect(addr).await;
    assert!(
        refused.is_err(),
        "the listener must be closed once run() returned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_no_clients_returns_promptly() {
    let server = TestServer::start_with(|config| config.shutdown_grace = GRACE).await;
    let took = server.shutdown().await;
    assert!(took < Duration::from_secs(1), "idle shutdown took {took:?}");
}
