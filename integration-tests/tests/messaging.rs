//! Group messaging over the JSON subprotocol and to simple clients (spec §2.3–2.4, §3.1–3.3):
//! fan-out, `noEcho`, data types, `fromUserId`, leaving, ack idempotency, ping, subprotocol
//! negotiation, raw frames.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hubcast_integration_tests::{
    JOIN_ROLE, JSON_SUBPROTOCOL, JsonClient, SEND_ROLE, SimpleClient, TestServer,
    assert_eventually, raw_upgrade, request,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const HUB: &str = "msgs";
const BOTH: &[&str] = &[JOIN_ROLE, SEND_ROLE];

fn assert_group_message(message: &Value, group: &str, from_user: Value, data_type: &str) {
    assert_eq!(message["type"], "message", "{message}");
    assert_eq!(message["from"], "group", "{message}");
    assert_eq!(message["group"], group, "{message}");
    assert_eq!(
        message.get("fromUserId"),
        Some(&from_user),
        "fromUserId: {message}"
    );
    assert_eq!(message["dataType"], data_type, "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_group_fans_out_to_every_member_in_order() {
    const MEMBERS: usize = 50;
    let server = TestServer::start().await;
    let before = server.router().stats();
    let mut members = Vec::with_capacity(MEMBERS);
    for i in 0..MEMBERS {
        let mut member = server
            .json_client(HUB, Some(&format!("member{i}")), &[JOIN_ROLE], &[])
            .await;
        member.join("room").await;
        members.push(member);
    }
    let mut outsider = server
        .json_client(HUB, Some("outsider"), &[JOIN_ROLE], &[])
        .await;
    outsider.join("other").await;
    assert_eq!(
        server.router().stats().connections,
        before.connections + MEMBERS as u64 + 1
    );

    let mut sender = server
        .json_client(HUB, Some("sender"), &[SEND_ROLE], &[])
        .await;
    for n in 1..=3u64 {
        sender
            .send(json!({
                "type": "sendToGroup", "group": "room", "ackId": n,
                "dataType": "json", "data": {"n": n},
            }))
            .await;
        sender.expect_ack_ok(n).await;
    }

    for (i, member) in members.iter_mut().enumerate() {
        for n in 1..=3u64 {
            let message = member.recv_message().await;
            assert_group_message(&message, "room", json!("sender"), "json");
            assert_eq!(message["data"], json!({"n": n}), "member {i}: {message}");
        }
    }
    outsider.expect_nothing_queued().await;
    sender.expect_nothing_queued().await;
    let after = server.router().stats();
    assert!(
        after.messages_delivered >= before.messages_delivered + 3 * MEMBERS as u64,
        "messages_delivered {} -> {}",
        before.messages_delivered,
        after.messages_delivered
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_in_the_group_gets_its_own_message_unless_no_echo() {
    let server = TestServer::start().await;
    let mut sender = server.json_client(HUB, Some("s"), BOTH, &[]).await;
    let mut other = server.json_client(HUB, Some("o"), &[JOIN_ROLE], &[]).await;
    sender.join("room").await;
    other.join("room").await;

    sender
        .send(json!({"type": "sendToGroup", "group": "room", "ackId": 1,
                     "noEcho": true, "dataType": "text", "data": "quiet"}))
        .await;
    sender
        .send(json!({"type": "sendToGroup", "group": "room", "ackId": 2,
                     "noEcho": false, "dataType": "text", "data": "loud"}))
        .await;
    sender
        .send(json!({"type": "sendToGroup", "group": "room", "ackId": 3,
                     "dataType": "text", "data": "default"}))
        .await;
    for ack in 1..=3 {
        sender.expect_ack_ok(ack).await;
    }

    // Everyone else gets all three, in order.
    for expected in ["quiet", "loud", "default"] {
        let message = other.recv_message().await;
        assert_eq!(message["data"], expected, "{message}");
    }
    // The sender gets only the echoed ones: the first data message it sees is "loud".
    let first = sender.recv_message().await;
    assert_eq!(first["data"], "loud", "noEcho message was echoed: {first}");
    let second = sender.recv_message().await;
    assert_eq!(
        second["data"], "default",
        "noEcho defaults to false: {second}"
    );
    sender.expect_nothing_queued().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_data_type_round_trips() {
    let server = TestServer::start().await;
    let mut sender = server.json_client(HUB, Some("s"), &[SEND_ROLE], &[]).await;
    let mut receiver = server.json_client(HUB, Some("r"), &[JOIN_ROLE], &[]).await;
    receiver.join("types").await;

    let bytes_padded: Vec<u8> = vec![0, 1, 2, 0x7f, 0x80, 0xfe, 0xff]; // 7 bytes: "=" padding
    let bytes_even: Vec<u8> = (0u8..=255).collect();
    let cases: Vec<(&str, Value)> = vec![
        (
            "json",
            json!({"a": 1, "nested": {"list": [1, "two", null, true]}}),
        ),
        ("json", json!([1, 2, 3])),
        ("json", json!("Hello World")),
        ("json", json!(42.5)),
        ("json", json!(false)),
        ("text", json!("plain text")),
        ("text", json!("héllo ✓ 日本")),
        ("text", json!("{\"looks\":\"like json\"}")),
        ("text", json!("")),
        ("binary", json!(STANDARD.encode(&bytes_padded))),
        ("binary", json!(STANDARD.encode(&bytes_even))),
        ("protobuf", json!(STANDARD.encode(b"\x0a\x05hello\x10\x01"))),
    ];

    for (i, (data_type, data)) in cases.iter().enumerate() {
        let ack = i as u64 + 1;
        sender
            .send(json!({
                "type": "sendToGroup", "group": "types", "ackId": ack,
                "dataType": data_type, "data": data,
            }))
            .await;
        sender.expect_ack_ok(ack).await;
        let message = receiver.recv_message().await;
        assert_group_message(&message, "types", json!("s"), data_type);
        assert_eq!(&message["data"], data, "case {i} ({data_type}): {message}");
        if matches!(*data_type, "binary" | "protobuf") {
            let decoded = STANDARD
                .decode(message["data"].as_str().expect("base64 string"))
                .expect("standard padded base64");
            assert_eq!(
                decoded,
                STANDARD
                    .decode(data.as_str().expect("base64"))
                    .expect("ours")
            );
        }
    }

    // dataType defaults to json.
    sender
        .send(json!({"type": "sendToGroup", "group": "types", "ackId": 100, "data": {"d": 1}}))
        .await;
    sender.expect_ack_ok(100).await;
    let message = receiver.recv_message().await;
    assert_group_message(&message, "types", json!("s"), "json");
    assert_eq!(message["data"], json!({"d": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_user_id_names_the_sender_or_is_null() {
    let server = TestServer::start().await;
    let mut alice = server
        .json_client(HUB, Some("alice"), &[SEND_ROLE], &[])
        .await;
    let mut anonymous = server.json_client(HUB, None, &[SEND_ROLE], &[]).await;
    let mut receiver = server.json_client(HUB, Some("r"), &[JOIN_ROLE], &[]).await;
    receiver.join("g").await;

    alice.publish_text("g", "from alice").await;
    anonymous.publish_text("g", "from nobody").await;

    let message = receiver.recv_message().await;
    assert_group_message(&message, "g", json!("alice"), "text");
    assert_eq!(message["data"], "from alice");
    let message = receiver.recv_message().await;
    assert_group_message(&message, "g", Value::Null, "text");
    assert_eq!(message["data"], "from nobody");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_group_stops_delivery() {
    let server = TestServer::start().await;
    let mut sender = server.json_client(HUB, Some("s"), &[SEND_ROLE], &[]).await;
    let mut receiver = server.json_client(HUB, Some("r"), &[JOIN_ROLE], &[]).await;
    receiver.join("g1").await;
    receiver.join("g2").await;

    sender.publish_text("g1", "one").await;
    assert_eq!(receiver.recv_message().await["data"], "one");

    receiver.leave("g1").await;
    assert!(
        !server.router().group_exists(HUB, "g1"),
        "g1 lost its last member"
    );
    assert!(server.router().group_exists(HUB, "g2"));

    sender.publish_text("g1", "two").await;
    sender.publish_text("g2", "three").await;
    let message = receiver.recv_message().await;
    assert_eq!(
        (message["group"].as_str(), message["data"].as_str()),
        (Some("g2"), Some("three")),
        "a message to a left group was delivered: {message}"
    );

    // Leaving a group one is not in succeeds and changes nothing.
    receiver.leave("never-joined").await;
    sender.publish_text("g2", "four").await;
    assert_eq!(receiver.recv_message().await["data"], "four");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_ack_id_is_acked_duplicate_and_not_executed_again() {
    let server = TestServer::start().await;
    let mut client = server.json_client(HUB, Some("c"), BOTH, &[]).await;
    let mut member = server.json_client(HUB, Some("m"), &[JOIN_ROLE], &[]).await;
    member.join("room").await;

    client
        .send(json!({"type": "sendToGroup", "group": "room", "ackId": 1,
                     "dataType": "text", "data": "first"}))
        .await;
    client.expect_ack_ok(1).await;

    client
        .send(json!({"type": "sendToGroup", "group": "room", "ackId": 1,
                     "dataType": "text", "data": "again"}))
        .await;
    client.expect_ack_error(1, "Duplicate").await;

    // Any message type shares the ackId space.
    client
        .send(json!({"type": "joinGroup", "group": "elsewhere", "ackId": 1}))
        .await;
    client.expect_ack_error(1, "Duplicate").await;
    assert!(
        !server.router().group_exists(HUB, "elsewhere"),
        "a Duplicate join must not be executed"
    );

    client
        .send(json!({"type": "sendToGroup", "group": "room", "ackId": 2,
                     "dataType": "text", "data": "second"}))
        .await;
    client.expect_ack_ok(2).await;

    assert_eq!(member.recv_message().await["data"], "first");
    let next = member.recv_message().await;
    assert_eq!(
        next["data"], "second",
        "the Duplicate was delivered: {next}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_ack_id_is_not_remembered() {
    let server = TestServer::start().await;
    let mut client = server
        .json_client(HUB, Some("c"), &["webpubsub.joinLeaveGroup.allowed"], &[])
        .await;
    client
        .send(json!({"type": "joinGroup", "group": "denied", "ackId": 9}))
        .await;
    client.expect_ack_error(9, "Forbidden").await;
    // Re-used after a failure: executed again (and allowed this time), not Duplicate.
    client
        .send(json!({"type": "joinGroup", "group": "allowed", "ackId": 9}))
        .await;
    client.expect_ack_ok(9).await;
    assert!(server.router().group_exists(HUB, "allowed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_answered_with_pong() {
    let server = TestServer::start().await;
    let mut client = server.json_client(HUB, Some("c"), &[], &[]).await;
    for _ in 0..3 {
        client.send(json!({"type": "ping"})).await;
        let pong = client.recv().await;
        assert_eq!(pong["type"], "pong", "{pong}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_messages_are_acked_without_any_role() {
    let server = TestServer::start().await;
    let mut client = server.json_client(HUB, Some("c"), &[], &[]).await;
    client
        .send(json!({"type": "event", "event": "chat", "ackId": 7,
                     "dataType": "json", "data": {"a": 1}}))
        .await;
    client.expect_ack_ok(7).await;
    client
        .send(json!({"type": "event", "event": "raw", "ackId": 8,
                     "dataType": "binary", "data": STANDARD.encode(b"\x00\x01")}))
        .await;
    client.expect_ack_ok(8).await;
    // Without an ackId nothing comes back.
    client
        .send(json!({"type": "event", "event": "chat", "dataType": "text", "data": "x"}))
        .await;
    client.expect_nothing_queued().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_is_matched_case_insensitively_and_echoed_as_offered() {
    let server = TestServer::start().await;
    let url = server.url(HUB, Some("c"), &[], &[]);

    let client = JsonClient::connect_request(request(&url, &[JSON_SUBPROTOCOL], None)).await;
    let echoed = client
        .response()
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok());
    assert_eq!(echoed, Some(JSON_SUBPROTOCOL));

    // Another spelling is the same subprotocol. The echo must be one of the offered values
    // byte for byte: RFC 6455 clients (browsers, tungstenite) fail the handshake otherwise.
    let offered = "JSON.WebPubSub.Azure.V1";
    let token = server.token(HUB, Some("c"), &[], &[]);
    let upgrade = raw_upgrade(
        server.client_addr(),
        &format!("/client/hubs/{HUB}?access_token={token}"),
        &[("Sec-WebSocket-Protocol", offered)],
    )
    .await;
    assert_eq!(upgrade.status, 101, "{upgrade:?}");
    assert_eq!(
        upgrade.header("sec-websocket-protocol"),
        Some(offered),
        "the subprotocol must be echoed as offered"
    );
    let mut ws = SimpleClient::from_ws(upgrade.ws.expect("upgraded"));
    match ws.recv().await {
        Message::Text(text) => {
            let connected: Value = serde_json::from_str(text.as_str()).expect("JSON");
            assert_eq!(
                connected["event"], "connected",
                "JSON protocol in effect: {connected}"
            );
        }
        other => panic!("expected the `connected` message, got {other:?}"),
    }

    // And through a real client library, which checks the echo.
    let client = JsonClient::connect_request(request(&url, &[offered], None)).await;
    assert_eq!(client.user_id(), Some("c"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_subprotocol_makes_a_simple_client_and_is_not_echoed() {
    let server = TestServer::start().await;
    let token = server.token(HUB, Some("raw"), &[], &["feed"]);
    let upgrade = raw_upgrade(
        server.client_addr(),
        &format!("/client/hubs/{HUB}?access_token={token}"),
        &[("Sec-WebSocket-Protocol", "custom.protocol.v1")],
    )
    .await;
    assert_eq!(upgrade.status, 101, "{upgrade:?}");
    assert_eq!(
        upgrade.header("sec-websocket-protocol"),
        None,
        "an unknown subprotocol must not be echoed"
    );
    let mut simple = SimpleClient::from_ws(upgrade.ws.expect("upgraded"));
    // A simple client gets no `connected` message to wait for: the server registers it
    // (in its token's groups) before answering 101, so it is reachable at once.
    assert!(server.router().group_exists(HUB, "feed"));

    let mut sender = server.json_client(HUB, Some("s"), &[SEND_ROLE], &[]).await;
    sender.publish_text("feed", "raw hello").await;
    // No `connected` message first: the first frame is the group data itself.
    assert_eq!(simple.recv().await, Message::text("raw hello"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_client_receives_group_data_as_raw_frames() {
    let server = TestServer::start().await;
    let mut simple = SimpleClient::connect(&server.url(HUB, Some("raw"), &[], &["feed"])).await;
    let mut sender = server.json_client(HUB, Some("s"), &[SEND_ROLE], &[]).await;
    let bytes: Vec<u8> = vec![0, 159, 146, 150, 255, 10];

    let sends = [
        json!({"dataType": "text", "data": "plain text"}),
        json!({"dataType": "json", "data": {"a": 1, "b": [true, null]}}),
        json!({"dataType": "json", "data": "Hello World"}),
        json!({"dataType": "binary", "data": STANDARD.encode(&bytes)}),
        json!({"dataType": "protobuf", "data": STANDARD.encode(b"\x0a\x02hi")}),
    ];
    for (i, body) in sends.iter().enumerate() {
        let mut message = body.clone();
        message["type"] = json!("sendToGroup");
        message["group"] = json!("feed");
        message["ackId"] = json!(i + 1);
        sender.send(message).await;
        sender.expect_ack_ok(i as u64 + 1).await;
    }

    assert_eq!(simple.recv().await, Message::text("plain text"));
    match simple.recv().await {
        Message::Text(text) => {
            let value: Value = serde_json::from_str(text.as_str()).expect("JSON text frame");
            assert_eq!(value, json!({"a": 1, "b": [true, null]}));
        }
        other => panic!("json data must arrive as a text frame, got {other:?}"),
    }
    assert_eq!(
        simple.recv().await,
        Message::text("\"Hello World\""),
        "a JSON string arrives with its quotes"
    );
    assert_eq!(simple.recv().await, Message::binary(bytes));
    assert_eq!(simple.recv().await, Message::binary(b"\x0a\x02hi".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_from_a_simple_client_closes_it_with_1011() {
    let server = TestServer::start().await;
    let mut watcher = server.json_client(HUB, Some("w"), &[], &[]).await;
    let before = server.router().stats().connections;
    let mut simple = SimpleClient::connect(&server.url(HUB, Some("raw"), &[], &[])).await;
    assert_eq!(
        server.router().stats().connections,
        before + 1,
        "registered before the 101"
    );

    simple.send(Message::text("hello upstream")).await;
    let closed = simple.expect_close().await;
    assert_eq!(closed.code, 1011, "{closed:?}");
    assert!(
        closed.frames.is_empty(),
        "simple clients get no system messages: {closed:?}"
    );
    assert_eventually!(
        server.router().stats().connections == before,
        "the closed simple client is still counted"
    );
    watcher.ping().await;
}
