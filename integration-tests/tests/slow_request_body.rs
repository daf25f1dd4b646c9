//! A REST request body that trickles in (README "Limits": `request_body_timeout`): an
//! authenticated caller sending its body a byte at a time gets 408 once the timeout has
//! passed, and the connection is let go, while other callers are served meanwhile.
//! Single-node by nature: the limit and its counter are each node's own.

use std::time::{Duration, Instant};

use hubcast_integration_tests::{TIMEOUT, TestServer};
use hubcast_server::limits::LimitKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_body_that_trickles_gets_408_after_the_body_timeout_while_others_are_served() {
    let server =
        TestServer::start_single_with(|c| c.limits.request_body_timeout = Duration::from_secs(1))
            .await;
    let path = "/api/hubs/chat/:send?api-version=2024-01-01";
    let token = server.rest().token_for(path);
    let stream = TcpStream::connect(server.addr()).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: text/plain\r\nContent-Length: 1000\r\n\r\n",
                server.addr()
            )
            .as_bytes(),
        )
        .await
        .expect("write the headers");
    let started = Instant::now();
    // One byte every 100 ms: the 1000 bytes announced would take 100 s.
    let trickle = tokio::spawn(async move {
        for _ in 0..1000 {
            if write.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    // Another caller is served while the body trickles.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let other = server
        .rest()
        .call("POST", path, Some(("text/plain", b"hello")))
        .await;
    assert_eq!(other.status, 202, "{other:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the other call was not served while the body trickled"
    );

    let mut response = Vec::new();
    tokio::time::timeout(TIMEOUT, read.read_to_end(&mut response))
        .await
        .expect("no answer (and connection still open) 5 s after a 1 s body timeout")
        .expect("read the answer");
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.starts_with("HTTP/1.1 408 "),
        "a trickled body is answered 408: {text}"
    );
    assert!(text.contains("request_body_timeout"), "{text}");
    assert!(
        elapsed >= Duration::from_millis(900),
        "answered after {elapsed:?}: before the timeout"
    );
    assert_eq!(
        server.limit_counters().get(LimitKind::RequestBodyTimeout),
        1
    );
    trickle.abort();
}
