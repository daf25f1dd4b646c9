//! `json.reliable.webpubsub.azure.v1`: sequence ids, acknowledgements, the unacked buffer,
//! and recovery of a logical connection after its socket is lost (spec §3.4).

use std::time::Duration;

use hubcast_integration_tests::{
    JOIN_ROLE, JSON_RELIABLE_SUBPROTOCOL, JSON_SUBPROTOCOL, JsonClient, SEND_ROLE, TestServer,
    assert_eventually,
};
use serde_json::{Value, json};

const HUB: &str = "reliable";

async fn reliable(server: &TestServer, user: &str) -> JsonClient {
    let url = server.url(HUB, Some(user), &[JOIN_ROLE, SEND_ROLE], &[]);
    JsonClient::connect_as(&url, JSON_RELIABLE_SUBPROTOCOL).await
}

fn recovery_url(server: &TestServer, client: &JsonClient, token: &str) -> String {
    // Azure's clients append the recovery parameters to the original URL, stale access
    // token and all: the server must ignore that token.
    let original = server.url_to_node_of(client.connection_id(), HUB, Some("ignored"), &[], &[]);
    format!(
        "{original}&awps_connection_id={}&awps_reconnection_token={token}",
        client.connection_id()
    )
}

fn token_of(connected: &Value) -> String {
    connected["reconnectionToken"]
        .as_str()
        .unwrap_or_else(|| panic!("reliable `connected` carries a reconnectionToken: {connected}"))
        .to_owned()
}

/// Reads the next data message, checking it carries `expected` as sequenceId.
async fn expect_numbered(client: &mut JsonClient, expected: u64, text: &str) {
    let message = client.recv_message().await;
    assert_eq!(
        (message["sequenceId"].as_u64(), message["data"].as_str()),
        (Some(expected), Some(text)),
        "{message}"
    );
}

#[tokio::test]
async fn data_messages_are_numbered_and_control_messages_are_not() {
    let server = TestServer::start().await;
    let mut receiver = reliable(&server, "r").await;
    token_of(receiver.connected());
    receiver.join("g").await;
    let mut sender = server.json_client(HUB, Some("s"), &[SEND_ROLE], &[]).await;
    for i in 1..=3 {
        sender.publish_text("g", &format!("m{i}")).await;
    }
    for i in 1..=3 {
        expect_numbered(&mut receiver, i, &format!("m{i}")).await;
    }
    receiver.send(json!({"type": "ping"})).await;
    let pong = receiver.recv().await;
    assert_eq!(pong, json!({"type": "pong"}), "no sequenceId on pongs");
    receiver
        .send(json!({"type": "joinGroup", "group": "h", "ackId": 5}))
        .await;
    let ack = receiver.ack(5).await;
    assert!(
        ack.get("sequenceId").is_none(),
        "no sequenceId on acks: {ack}"
    );
}

#[tokio::test]
async fn non_reliable_connected_has_no_reconnection_token() {
    let server = TestServer::start().await;
    let client = server.json_client(HUB, None, &[], &[]).await;
    assert!(client.connected().get("reconnectionToken").is_none());
}

#[tokio::test]
async fn recovery_resends_every_unacked_message_in_order_and_keeps_groups() {
    let server = TestServer::start().await;
    let mut receiver = reliable(&server, "r").await;
    let id = receiver.connection_id().to_owned();
    let token = token_of(receiver.connected());
    receiver.join("g").await;
    let mut sender = server.json_client(HUB, Some("s"), &[SEND_ROLE], &[]).await;
    for i in 1..=5 {
        sender.publish_text("g", &format!("m{i}")).await;
    }
    for i in 1..=5 {
        expect_numbered(&mut receiver, i, &format!("m{i}")).await;
    }
    receiver
        .send(json!({"type": "sequenceAck", "sequenceId": 2}))
        .await;
    // Let the ack land before the socket goes (acks are fire-and-forget).
    receiver.ping().await;
    let url = recovery_url(&server, &receiver, &token);
    receiver.abort();

    // While no socket is attached, the connection lives on and keeps collecting messages.
    for i in 6..=8 {
        sender.publish_text("g", &format!("m{i}")).await;
    }
    assert!(server.router().connection_exists(HUB, &id));

    let mut recovered = JsonClient::connect_as(&url, JSON_RELIABLE_SUBPROTOCOL).await;
    assert_eq!(recovered.connection_id(), id, "same logical connection");
    let fresh = token_of(recovered.connected());
    assert_ne!(fresh, token, "a fresh reconnection token");
    for i in 3..=8 {
        expect_numbered(&mut recovered, i, &format!("m{i}")).await;
    }
    sender.publish_text("g", "m9").await;
    expect_numbered(&mut recovered, 9, "m9").await;
}

#[tokio::test]
async fn a_client_that_closes_its_socket_can_still_recover() {
    // Azure's JS client closes its socket (with a close frame) before it recovers, e.g. after
    // a keep-alive timeout; the logical connection must survive that too.
    let server = TestServer::start().await;
    let mut receiver = reliable(&server, "r").await;
    let token = token_of(receiver.connected());
    receiver.join("g").await;
    let url = recovery_url(&server, &receiver, &token);
    receiver.close_without_code().await;
    let mut sender = server.json_client(HUB, Some("s"), &[SEND_ROLE], &[]).await;
    sender.publish_text("g", "while away").await;
    let mut recovered = JsonClient::connect_as(&url, JSON_RELIABLE_SUBPROTOCOL).await;
    expect_numbered(&mut recovered, 1, "while away").await;
}

#[tokio::test]
async fn a_client_that_closes_with_1000_leaves_for_good() {
    let server = TestServer::start().await;
    let receiver = reliable(&server, "r").await;
    let id = receiver.connection_id().to_owned();
    let url = recovery_url(&server, &receiver, &token_of(receiver.connected()));
    receiver.close().await;
    assert_eventually!(!server.router().connection_exists(HUB, &id));
    let retry = JsonClient::connect_raw(&url, JSON_RELIABLE_SUBPROTOCOL).await;
    assert_eq!(retry.expect_close().await.code, 1008);
}

#[tokio::test]
async fn a_second_socket_replaces_one_still_attached() {
    let server = TestServer::start().await;
    let mut first = reliable(&server, "r").await;
    let token = token_of(first.connected());
    first.join("g").await;
    let url = recovery_url(&server, &first, &token);
    let mut second = JsonClient::connect_as(&url, JSON_RELIABLE_SUBPROTOCOL).await;
    assert_eq!(second.connection_id(), first.connection_id());
    let mut sender = server.json_client(HUB, Some("s"), &[SEND_ROLE], &[]).await;
    sender.publish_text("g", "to the new socket").await;
    expect_numbered(&mut second, 1, "to the new socket").await;
    drop(first);
}

#[tokio::test]
async fn bad_or_foreign_reconnection_tokens_get_1008() {
    let server = TestServer::start().await;
    let mut a = reliable(&server, "a").await;
    let b = reliable(&server, "b").await;
    a.join("g").await;
    let b_token = token_of(b.connected());
    for token in [b_token.as_str(), "not-a-token"] {
        let client =
            JsonClient::connect_raw(&recovery_url(&server, &a, token), JSON_RELIABLE_SUBPROTOCOL)
                .await;
        let closed = client.expect_close().await;
        assert_eq!(closed.code, 1008, "{closed:?}");
        assert!(
            closed.expect_disconnected().contains("reconnection token"),
            "{closed:?}"
        );
    }
    // A refused recovery leaves the real owner untouched.
    a.ping().await;
}

#[tokio::test]
async fn recovery_after_the_window_gets_1008() {
    let server = TestServer::start_with(|cfg| {
        cfg.client.recovery_window = Duration::from_millis(200);
    })
    .await;
    let receiver = reliable(&server, "r").await;
    let id = receiver.connection_id().to_owned();
    let url = recovery_url(&server, &receiver, &token_of(receiver.connected()));
    receiver.abort();
    assert_eventually!(
        !server.router().connection_exists(HUB, &id),
        "connection {id} outlived its recovery window"
    );
    let client = JsonClient::connect_raw(&url, JSON_RELIABLE_SUBPROTOCOL).await;
    let closed = client.expect_close().await;
    assert_eq!(closed.code, 1008);
    // A fresh connection works and gets a new id.
    let fresh = reliable(&server, "r").await;
    assert_ne!(fresh.connection_id(), id);
}

#[tokio::test]
async fn unacked_overflow_closes_the_connection_for_good() {
    let server = TestServer::start_with(|cfg| {
        cfg.client.unacked_max_messages = 5;
    })
    .await;
    let mut receiver = reliable(&server, "r").await;
    let id = receiver.connection_id().to_owned();
    let url = recovery_url(&server, &receiver, &token_of(receiver.connected()));
    receiver.join("g").await;
    let mut sender = server.json_client(HUB, Some("s"), &[SEND_ROLE], &[]).await;
    for i in 1..=6 {
        sender.publish_text("g", &format!("m{i}")).await;
    }
    let closed = receiver.expect_close().await;
    assert_eq!(closed.code, 1008, "{closed:?}");
    assert!(closed.expect_disconnected().contains("acknowledged"));
    assert_eventually!(!server.router().connection_exists(HUB, &id));
    let retry = JsonClient::connect_raw(&url, JSON_RELIABLE_SUBPROTOCOL).await;
    assert_eq!(retry.expect_close().await.code, 1008);
    // The sender was never affected.
    sender.ping().await;
}

#[tokio::test]
async fn acknowledged_messages_free_the_buffer() {
    let server = TestServer::start_with(|cfg| {
        cfg.client.unacked_max_messages = 5;
    })
    .await;
    let mut receiver = reliable(&server, "r").await;
    receiver.join("g").await;
    let mut sender = server.json_client(HUB, Some("s"), &[SEND_ROLE], &[]).await;
    for i in 1..=20_u64 {
        sender.publish_text("g", &format!("m{i}")).await;
        expect_numbered(&mut receiver, i, &format!("m{i}")).await;
        receiver
            .send(json!({"type": "sequenceAck", "sequenceId": i}))
            .await;
        receiver.ping().await;
    }
}

#[tokio::test]
async fn a_retried_ack_id_after_recovery_is_a_duplicate_not_a_second_delivery() {
    let server = TestServer::start().await;
    let mut watcher = server.json_client(HUB, Some("w"), &[JOIN_ROLE], &[]).await;
    watcher.join("g").await;
    let mut publisher = reliable(&server, "p").await;
    let url = recovery_url(&server, &publisher, &token_of(publisher.connected()));
    let publish = json!({"type": "sendToGroup", "group": "g", "ackId": 7, "dataType": "text", "data": "once"});
    publisher.send(publish.clone()).await;
    publisher.expect_ack_ok(7).await;
    publisher.abort();

    let mut recovered = JsonClient::connect_as(&url, JSON_RELIABLE_SUBPROTOCOL).await;
    recovered.send(publish).await;
    recovered.expect_ack_error(7, "Duplicate").await;
    recovered.publish_text("g", "after").await;
    assert_eq!(watcher.recv_message().await["data"], "once");
    assert_eq!(
        watcher.recv_message().await["data"],
        "after",
        "the duplicate was not delivered again"
    );
}

#[tokio::test]
async fn a_non_reliable_connection_ends_with_its_socket() {
    let server = TestServer::start().await;
    let client = server.json_client(HUB, None, &[], &[]).await;
    let id = client.connection_id().to_owned();
    let url = format!(
        "{}&awps_connection_id={id}&awps_reconnection_token=x",
        server.url(HUB, None, &[], &[])
    );
    client.abort();
    assert_eventually!(!server.router().connection_exists(HUB, &id));
    let retry = JsonClient::connect_raw(&url, JSON_RELIABLE_SUBPROTOCOL).await;
    assert_eq!(retry.expect_close().await.code, 1008);
}

#[tokio::test]
async fn recovery_needs_the_connections_own_subprotocol() {
    let server = TestServer::start().await;
    let receiver = reliable(&server, "r").await;
    let url = recovery_url(&server, &receiver, &token_of(receiver.connected()));
    let wrong = JsonClient::connect_raw(&url, JSON_SUBPROTOCOL).await;
    assert_eq!(wrong.expect_close().await.code, 1008);
}
