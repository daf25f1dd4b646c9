//! Limits (README "Limits"): each one refuses with its documented status, close code or ack
//! error, names the setting in the reason, is counted, and leaves everybody else alone.

use std::time::Duration;

use bytes::Bytes;
use hubcast_integration_tests::{
    Bystanders, JOIN_ROLE, JsonClient, TIMEOUT, TestServer, assert_eventually, raw_upgrade,
    request, try_connect, upgrade_status,
};
use hubcast_server::Config;
use hubcast_server::config::{EventHandlerConfig, HubConfig, HubLimitOverrides};
use hubcast_server::limits::LimitKind;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// The path and query of a client URL, for [`raw_upgrade`].
fn path_of(url: &str) -> &str {
    let rest = url.strip_prefix("ws://").expect("ws:// URL");
    &rest[rest.find('/').expect("URL has a path")..]
}

fn limited_hub(overrides: HubLimitOverrides) -> HubConfig {
    HubConfig {
        limits: overrides,
        ..HubConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_user_limit_are_refused_with_429() {
    let server = TestServer::start_with(|c| {
        c.hubs.insert(
            "capped".into(),
            limited_hub(HubLimitOverrides {
                max_connections_per_user: Some(2),
                ..HubLimitOverrides::default()
            }),
        );
    })
    .await;
    let _a = server.json_client("capped", Some("alice"), &[], &[]).await;
    let b = server.json_client("capped", Some("alice"), &[], &[]).await;
    let url = server.url("capped", Some("alice"), &[], &[]);
    let status = upgrade_status(request(&url, &["json.webpubsub.azure.v1"], None)).await;
    assert_eq!(status, 429, "a third connection of alice is refused");
    assert_eq!(
        server.limit_counters().get(LimitKind::ConnectionsPerUser),
        1
    );
    // Other users, and the same user in a hub without the override, are not limited.
    let _bob = server.json_client("capped", Some("bob"), &[], &[]).await;
    let _elsewhere = server.json_client("other", Some("alice"), &[], &[]).await;
    // A slot freed is a slot available again.
    b.close().await;
    assert_eventually!(server.router().user_connection_count("capped", "alice") == 1);
    let _again = server.json_client("capped", Some("alice"), &[], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_hub_limit_are_refused_with_429_and_a_reason() {
    let server = TestServer::start_with(|c| c.limits.max_connections_per_hub = 2).await;
    let _a = server.json_client("full", Some("a"), &[], &[]).await;
    let _b = server.json_client("full", None, &[], &[]).await;
    let refused = raw_upgrade(
        server.addr(),
        path_of(&server.url("full", Some("c"), &[], &[])),
        &[],
    )
    .await;
    assert_eq!(refused.status, 429);
    assert_eq!(server.limit_counters().get(LimitKind::ConnectionsPerHub), 1);
    // Another hub has its own count.
    let _c = server.json_client("empty", Some("c"), &[], &[]).await;
    // The refusal is on /metrics, by limit; limits that refused nothing read 0.
    let metrics = server
        .rest()
        .call_with("GET", "/metrics", None, None, &[])
        .await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.body.to_vec()).expect("UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.contains(&r#"hubcast_limit_refusals_total{limit="connections_per_hub"} 1"#),
        "{text}"
    );
    assert!(
        lines.contains(&r#"hubcast_limit_refusals_total{limit="connections_per_user"} 0"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_beyond_the_group_limit_are_acked_forbidden() {
    let server = TestServer::start_with(|c| c.limits.max_groups_per_connection = 3).await;
    let mut client = server
        .json_client("groups", Some("g"), &[JOIN_ROLE], &[])
        .await;
    for g in ["a", "b", "c"] {
        client.join(g).await;
    }
    client
        .send(json!({"type": "joinGroup", "group": "d", "ackId": 1}))
        .await;
    let ack = client.expect_ack_error(1, "Forbidden").await;
    assert!(
        ack["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_groups_per_connection")),
        "{ack}"
    );
    // Rejoining a group already joined is not a new group; leaving makes room.
    client.join("a").await;
    client.leave("b").await;
    client.join("d").await;
    assert_eq!(
        server.limit_counters().get(LimitKind::GroupsPerConnection),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_message_rate_is_closed_with_1008_and_others_continue() {
    const HUB: &str = "rate";
    let server = TestServer::start_with(|c| {
        c.hubs.insert(
            HUB.into(),
            limited_hub(HubLimitOverrides {
                messages_per_second: Some(5),
                ..HubLimitOverrides::default()
            }),
        );
    })
    .await;
    let mut bystanders = Bystanders::connect(&server, HUB).await;
    let mut flooder = server.json_client(HUB, Some("flood"), &[], &[]).await;
    for _ in 0..50 {
        flooder.send(json!({"type": "ping"})).await;
    }
    let closed = flooder.expect_close().await;
    assert_eq!(closed.code, 1008, "{closed:?}");
    let reason = closed.expect_disconnected();
    assert!(reason.contains("messages_per_second"), "{reason}");
    assert!(server.limit_counters().get(LimitKind::MessageRate) >= 1);
    // The bystanders send at a normal pace, under the same hub limit.
    bystanders.check(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_byte_rate_is_closed_with_1008() {
    let server = TestServer::start_with(|c| c.limits.bytes_per_second = 4096).await;
    let mut flooder = server.json_client("bytes", Some("flood"), &[], &[]).await;
    let padding = "x".repeat(1000);
    for _ in 0..20 {
        flooder
            .send(json!({"type": "ping", "padding": padding}))
            .await;
    }
    let closed = flooder.expect_close().await;
    assert_eq!(closed.code, 1008, "{closed:?}");
    assert!(
        closed.expect_disconnected().contains("bytes_per_second"),
        "{closed:?}"
    );
    assert!(server.limit_counters().get(LimitKind::ByteRate) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_id_over_the_length_limit_is_refused_with_400() {
    let server = TestServer::start_with(|c| c.limits.max_user_id_chars = 16).await;
    let long = "u".repeat(17);
    let refused = raw_upgrade(
        server.addr(),
        path_of(&server.url("names", Some(&long), &[], &[])),
        &[],
    )
    .await;
    assert_eq!(refused.status, 400);
    assert_eq!(server.limit_counters().get(LimitKind::UserIdLength), 1);
    let _ok = server
        .json_client("names", Some(&"u".repeat(16)), &[], &[])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_name_over_the_length_limit_is_acked_bad_request() {
    let server = TestServer::start_with(|c| c.limits.max_event_name_chars = 8).await;
    let mut client = server.json_client("events", Some("e"), &[], &[]).await;
    client
        .send(
            json!({"type": "event", "event": "a-much-too-long-name", "ackId": 7,
                     "dataType": "text", "data": "x"}),
        )
        .await;
    let ack = client.expect_ack_error(7, "BadRequest").await;
    assert!(
        ack["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_event_name_chars")),
        "{ack}"
    );
    assert_eq!(server.limit_counters().get(LimitKind::EventNameLength), 1);
    // The connection stays usable.
    client.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_dropped_after_the_idle_timeout_while_an_answering_one_stays() {
    let server = TestServer::start_with(|c| {
        c.client.keepalive_interval = Duration::from_millis(300);
        c.limits.idle_timeout = Duration::from_secs(1);
    })
    .await;
    // Never reads, so never answers the server's pings.
    let url = server.url("idle", Some("silent"), &[], &[]);
    let (silent, _) = try_connect(request(&url, &["json.webpubsub.azure.v1"], None))
        .await
        .expect("upgrade");
    let mut lively = server.json_client("idle", Some("lively"), &[], &[]).await;
    assert_eventually!(server.router().user_connection_count("idle", "silent") == 1);
    // Reading (which answers pings) for three idle timeouts keeps a connection.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        lively.ping().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(server.router().user_connection_count("idle", "silent"), 0);
    assert_eq!(server.router().user_connection_count("idle", "lively"), 1);
    assert!(server.limit_counters().get(LimitKind::IdleTimeout) >= 1);
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_request_headers_is_cut_off_after_the_handshake_timeout() {
    let server =
        TestServer::start_with(|c| c.limits.handshake_timeout = Duration::from_secs(1)).await;
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    stream
        .write_all(b"GET /client/hubs/slow HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    // The server ends the connection (possibly after a 408); it does not wait forever.
    let ended = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut buf)).await;
    assert!(
        ended.is_ok(),
        "connection still open {TIMEOUT:?} after a 1 s handshake timeout"
    );
    // The listener still serves others.
    let _ok = server.json_client("slow", Some("ok"), &[], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_beyond_the_concurrent_handshake_limit_are_refused_with_503() {
    // A `connect` handler that accepts TCP and never answers keeps one handshake open.
    let stuck = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let stuck_addr = stuck.local_addr().expect("addr");
    let server = TestServer::start_with(move |c: &mut Config| {
        c.limits.max_concurrent_handshakes = 1;
        c.upstream.timeout = Duration::from_secs(3);
        c.hubs.insert(
            "slow".into(),
            HubConfig {
                event_handlers: vec![EventHandlerConfig {
                    url_template: format!("http://{stuck_addr}/events"),
                    user_event_pattern: None,
                    system_events: vec!["connect".into()],
                    auth: None,
                    http2: false,
                }],
                ..HubConfig::default()
            },
        );
    })
    .await;
    let first_url = server.url("slow", Some("first"), &[], &[]);
    let first = tokio::spawn(async move {
        upgrade_status(request(&first_url, &["json.webpubsub.azure.v1"], None)).await
    });
    let (_held, _) = tokio::time::timeout(TIMEOUT, stuck.accept())
        .await
        .expect("the first handshake reaches the connect handler")
        .expect("accept");
    let second = raw_upgrade(
        server.addr(),
        path_of(&server.url("other", Some("second"), &[], &[])),
        &[],
    )
    .await;
    assert_eq!(second.status, 503);
    assert_eq!(
        server.limit_counters().get(LimitKind::ConcurrentHandshakes),
        1
    );
    // Once the first handshake is decided (it fails: the handler never answers), the slot
    // is free again.
    let first = first.await.expect("first task");
    assert!(
        first >= 500,
        "the stuck connect event fails the first upgrade: {first}"
    );
    let _ok = JsonClient::connect(&server.url("other", Some("third"), &[], &[])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_upgrades_from_origins_not_allowed_are_refused_with_403() {
    let server = TestServer::start_with(|c| {
        c.client.allowed_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let path = server.url("web", Some("w"), &[], &[]);
    let path = path_of(&path);
    let evil = raw_upgrade(server.addr(), path, &[("Origin", "https://evil.example")]).await;
    assert_eq!(evil.status, 403);
    assert_eq!(server.limit_counters().get(LimitKind::Origin), 1);
    let good = raw_upgrade(
        server.addr(),
        path,
        &[("Origin", "https://APP.example.com")],
    )
    .await;
    assert_eq!(good.status, 101);
    // Non-browser clients send no Origin and are not affected.
    let plain = raw_upgrade(server.addr(), path, &[]).await;
    assert_eq!(plain.status, 101);
}

/// A hub whose `max_message_bytes` is [`SMALL`] under a `[limits]` default of 64 KiB.
const SMALL: usize = 2048;

async fn server_with_a_small_message_hub() -> TestServer {
    TestServer::start_with(|c| {
        c.limits.max_message_bytes = Some(64 * 1024);
        c.hubs.insert(
            "tiny".into(),
            limited_hub(HubLimitOverrides {
                max_message_bytes: Some(SMALL),
                ..HubLimitOverrides::default()
            }),
        );
    })
    .await
}

/// A `ping` of about `len` bytes (the padding is ignored by the server).
fn padded_ping(len: usize) -> String {
    json!({"type": "ping", "padding": "x".repeat(len)}).to_string()
}

/// Asserts the close of a message over the `tiny` hub's size, and that it was counted.
async fn expect_too_big(client: JsonClient, server: &TestServer) {
    let closed = client.expect_close().await;
    assert_eq!(closed.code, 1009, "{closed:?}");
    let reason = closed.expect_disconnected();
    assert!(
        reason.contains(&SMALL.to_string()),
        "names the limit: {reason}"
    );
    assert!(
        !closed.messages.iter().any(|m| m["type"] == "pong"),
        "the oversized message must not be processed: {:?}",
        closed.messages
    );
    assert_eq!(server.limit_counters().get(LimitKind::MessageSize), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_with_a_small_message_size_closes_with_1009_what_another_hub_accepts() {
    let server = server_with_a_small_message_hub().await;
    let message = padded_ping(SMALL * 2);
    // Another hub, under the [limits] default, answers it.
    let mut roomy = server.json_client("roomy", Some("r"), &[], &[]).await;
    roomy.send_frame(Message::text(message.clone())).await;
    roomy.recv_where(|m| m["type"] == "pong").await;
    // The small hub answers a message under its limit, and closes on the same message.
    let mut tiny = server.json_client("tiny", Some("t"), &[], &[]).await;
    tiny.send_frame(Message::text(padded_ping(SMALL / 2))).await;
    tiny.recv_where(|m| m["type"] == "pong").await;
    tiny.send_frame(Message::text(message)).await;
    expect_too_big(tiny, &server).await;
    // The roomy hub's connection is untouched, and the refusal is on /metrics.
    roomy.ping().await;
    let metrics = server
        .rest()
        .call_with("GET", "/metrics", None, None, &[])
        .await;
    let text = String::from_utf8(metrics.body.to_vec()).expect("UTF-8");
    assert!(
        text.lines()
            .any(|l| l == r#"hubcast_limit_refusals_total{limit="message_size"} 1"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_message_size_bounds_a_message_sent_in_small_fragments() {
    let server = server_with_a_small_message_hub().await;
    // Fragments of SMALL / 4 bytes each, which no frame-size check alone would refuse.
    let fragments = |message: &str| -> Vec<Message> {
        let chunks: Vec<&[u8]> = message.as_bytes().chunks(SMALL / 4).collect();
        let last = chunks.len() - 1;
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| {
                let opcode = if i == 0 {
                    OpCode::Data(Data::Text)
                } else {
                    OpCode::Data(Data::Continue)
                };
                Message::Frame(Frame::message(
                    Bytes::copy_from_slice(chunk),
                    opcode,
                    i == last,
                ))
            })
            .collect()
    };
    let mut tiny = server.json_client("tiny", Some("t"), &[], &[]).await;
    // Fragmented but under the limit: answered.
    for frame in fragments(&padded_ping(SMALL / 2)) {
        tiny.send_frame(frame).await;
    }
    tiny.recv_where(|m| m["type"] == "pong").await;
    // Over it in total, by its last fragment: closed, and the message is not processed.
    // (Only the last one goes over, so that no fragment is sent after the server stops
    // reading: the reset that would cause could lose the close frame.)
    let over = fragments(&padded_ping(SMALL));
    assert!(over.len() > 4, "several fragments");
    for frame in over {
        tiny.send_frame(frame).await;
    }
    expect_too_big(tiny, &server).await;
}

#[tokio::test]
async fn a_message_size_given_twice_with_different_values_is_refused_at_start() {
    let config = Config::from_toml(
        r#"
        listen = "127.0.0.1:0"
        grpc_listen = "127.0.0.1:0"
        [client]
        max_message_bytes = 2000
        [limits]
        max_message_bytes = 3000
        "#,
    )
    .expect("parses");
    let err = hubcast_server::Server::bind(config)
        .await
        .expect_err("contradictory sizes refused");
    let err = err.to_string();
    assert!(
        err.contains("client.max_message_bytes (2000)")
            && err.contains("limits.max_message_bytes (3000)"),
        "{err}"
    );
}

#[tokio::test]
async fn zero_limits_and_an_idle_timeout_under_the_keepalive_are_refused_at_start() {
    let mut config = Config::from_toml(
        r#"
        listen = "127.0.0.1:0"
        grpc_listen = "127.0.0.1:0"
        [hubs.chat.limits]
        max_connections_per_user = 0
        "#,
    )
    .expect("parses");
    let err = hubcast_server::Server::bind(config.clone())
        .await
        .expect_err("zero limit refused");
    assert!(
        err.to_string().contains("max_connections_per_user"),
        "{err}"
    );
    config.hubs.clear();
    config.limits.idle_timeout = Duration::from_secs(5);
    let err = hubcast_server::Server::bind(config)
        .await
        .expect_err("idle timeout under keep-alive refused");
    assert!(err.to_string().contains("idle_timeout"), "{err}");
}
