//! The demo page and what it needs: `/` and `/sdk/*.js` are served by every server;
//! `/dev/token` only in development mode, where its URLs connect with join and publish roles.

use std::net::SocketAddr;

use hubcast_integration_tests::{JsonClient, TIMEOUT, TestServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A plain HTTP/1.1 GET: status, lower-cased headers, body.
async fn get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    let work = async {
        let mut stream = TcpStream::connect(addr).await.expect("TCP connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read response");
        raw
    };
    let raw = tokio::time::timeout(TIMEOUT, work)
        .await
        .expect("GET timed out");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| v.as_str())
}

#[tokio::test]
async fn the_demo_page_and_the_client_package_are_served() {
    let server = TestServer::start().await;
    let (status, headers, body) = get(server.addr(), "/").await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type").starts_with("text/html"));
    assert!(body.contains("Hubcast demo chat"), "{body}");
    assert!(body.contains(r#"from "/sdk/index.js""#));

    for file in ["index.js", "client.js", "protocol.js", "wire.js"] {
        let (status, headers, body) = get(server.addr(), &format!("/sdk/{file}")).await;
        assert_eq!(status, 200, "/sdk/{file}");
        assert!(header(&headers, "content-type").starts_with("text/javascript"));
        assert!(!body.is_empty());
    }
    let (_, _, index) = get(server.addr(), "/sdk/index.js").await;
    assert!(index.contains("./client.js") && index.contains("./protocol.js"));
    let (status, _, _) = get(server.addr(), "/sdk/../Cargo.toml").await;
    assert_eq!(status, 404);
    let (status, _, _) = get(server.addr(), "/sdk/missing.js").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn dev_token_is_off_by_default() {
    let server = TestServer::start().await;
    let (status, _, body) = get(server.addr(), "/dev/token?hub=demo&user=alice").await;
    assert_eq!(status, 404);
    assert!(body.contains("--dev"), "{body}");
}

#[tokio::test]
async fn dev_token_mints_urls_that_join_and_publish() {
    let server = TestServer::start_with(|c| c.dev = true).await;
    let (status, headers, body) = get(server.addr(), "/dev/token?hub=demo&user=alice").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "content-type"), "application/json");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(json["hub"], "demo");
    assert_eq!(json["user"], "alice");
    let url = json["url"].as_str().expect("a url");
    // The URL names the public endpoint (on a cluster every node names the same one).
    let endpoint = server.endpoint().trim_end_matches('/');
    let ws_endpoint = endpoint.replacen("http", "ws", 1);
    assert!(
        url.starts_with(&format!("{ws_endpoint}/client/hubs/demo?access_token=")),
        "{url}"
    );

    let mut alice = JsonClient::connect(url).await;
    assert_eq!(alice.user_id(), Some("alice"));
    alice.join("room").await;
    alice.publish_text("room", "hello").await;
    let message = alice.recv_message().await;
    assert_eq!(message["data"], "hello");

    // Without a user, a guest name is made up; an invalid hub is refused.
    let (_, _, body) = get(server.addr(), "/dev/token").await;
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert!(
        json["user"]
            .as_str()
            .is_some_and(|u| u.starts_with("guest-")),
        "{json}"
    );
    assert_eq!(json["hub"], "demo");
    let (status, _, _) = get(server.addr(), "/dev/token?hub=9nope").await;
    assert_eq!(status, 400);
}
