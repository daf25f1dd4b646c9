//! The control plane (REST and gRPC) and reliable clients: control-plane sends are numbered
//! in the same `sequenceId` stream as group messages, survive a recovery like them, and
//! ignore a message TTL; control-plane closes end a reliable connection for good, attached or
//! not.

use std::time::Duration;

use hubcast_integration_tests::{
    JOIN_ROLE, JSON_RELIABLE_SUBPROTOCOL, JsonClient, SEND_ROLE, TestServer, assert_eventually,
};
use hubcast_sdk::SendOptions;
use serde_json::Value;

const HUB: &str = "chat";
const V: &str = "api-version=2024-12-01";

async fn reliable(server: &TestServer, user: &str) -> JsonClient {
    let url = server.url(HUB, Some(user), &[JOIN_ROLE, SEND_ROLE], &[]);
    JsonClient::connect_as(&url, JSON_RELIABLE_SUBPROTOCOL).await
}

fn recovery_url(server: &TestServer, client: &JsonClient) -> String {
    let token = client.connected()["reconnectionToken"]
        .as_str()
        .expect("reliable `connected` carries a reconnectionToken")
        .to_owned();
    format!(
        "{}&awps_connection_id={}&awps_reconnection_token={token}",
        server.url_to_node_of(client.connection_id(), HUB, Some("ignored"), &[], &[]),
        client.connection_id()
    )
}

/// Reads the next data message, checking its `sequenceId` and text.
async fn expect_numbered(client: &mut JsonClient, expected: u64, text: &str) -> Value {
    let message = client.recv_message().await;
    assert_eq!(
        (message["sequenceId"].as_u64(), message["data"].as_str()),
        (Some(expected), Some(text)),
        "{message}"
    );
    message
}

#[tokio::test]
async fn control_plane_sends_are_numbered_with_group_messages_and_recovered() {
    let server = TestServer::start().await;
    let grpc = server.service_client().await;
    let rest = server.rest();
    let mut receiver = reliable(&server, "r").await;
    receiver.join("g").await;
    let id = receiver.connection_id().to_owned();
    let mut sender = server.json_client(HUB, Some("s"), &[SEND_ROLE], &[]).await;

    sender.publish_text("g", "m1").await;
    grpc.send_to_connection(HUB, &id, "m2", SendOptions::new())
        .await
        .expect("gRPC send");
    let r = rest
        .call(
            "POST",
            &format!("/api/hubs/{HUB}/users/r/:send?{V}"),
            Some(("text/plain", b"m3")),
        )
        .await;
    assert_eq!(r.status, 202);
    // A TTL does not apply to reliable clients: the message is numbered like the others.
    grpc.send_to_group(
        HUB,
        "g",
        "m4",
        SendOptions::new().ttl(Duration::from_secs(1)),
    )
    .await
    .expect("gRPC send with TTL");
    let m2 = {
        expect_numbered(&mut receiver, 1, "m1").await;
        expect_numbered(&mut receiver, 2, "m2").await
    };
    assert_eq!(m2["from"], "server", "{m2}");
    expect_numbered(&mut receiver, 3, "m3").await;
    expect_numbered(&mut receiver, 4, "m4").await;

    // Acknowledge two, lose the socket, and let control-plane sends pile up meanwhile; one
    // with a TTL that passes before the client comes back.
    receiver
        .send(serde_json::json!({"type": "sequenceAck", "sequenceId": 2}))
        .await;
    receiver.ping().await;
    let url = recovery_url(&server, &receiver);
    receiver.abort();
    assert_eventually!(
        server
            .router()
            .connection(HUB, &id)
            .is_some_and(|c| c.outbox().epoch() > 0),
        "the connection detached"
    );
    grpc.send_to_all(HUB, "m5", SendOptions::new().ttl(Duration::from_secs(1)))
        .await
        .expect("gRPC send while detached");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut recovered = JsonClient::connect_as(&url, JSON_RELIABLE_SUBPROTOCOL).await;
    assert_eq!(recovered.connection_id(), id);
    for (n, text) in [(3, "m3"), (4, "m4"), (5, "m5")] {
        expect_numbered(&mut recovered, n, text).await;
    }
    grpc.send_to_user(HUB, "r", "m6", SendOptions::new())
        .await
        .expect("gRPC send after recovery");
    expect_numbered(&mut recovered, 6, "m6").await;
}

#[tokio::test]
async fn a_control_plane_close_ends_an_attached_reliable_connection_for_good() {
    let server = TestServer::start().await;
    let grpc = server.service_client().await;
    let client = reliable(&server, "r").await;
    let id = client.connection_id().to_owned();
    let url = recovery_url(&server, &client);
    grpc.close_connection(HUB, &id, "go away")
        .await
        .expect("close");
    assert!(
        !server.router().connection_exists(HUB, &id),
        "removed at once"
    );
    let closed = client.expect_close().await;
    assert_eq!(closed.expect_disconnected(), "go away");
    assert_eq!(closed.code, 1000);
    let retry = JsonClient::connect_raw(&url, JSON_RELIABLE_SUBPROTOCOL).await;
    assert_eq!(retry.expect_close().await.code, 1008, "no recovery");
    assert_eq!(server.router().stats().connections, 0);
}

#[tokio::test]
async fn a_control_plane_close_ends_a_detached_reliable_connection_at_once() {
    let server = TestServer::start_with(|cfg| {
        // Far longer than the test: only the close can end the connection in time.
        cfg.client.recovery_window = Duration::from_secs(600);
    })
    .await;
    let rest = server.rest();
    let mut client = reliable(&server, "r").await;
    client.join("g").await;
    let id = client.connection_id().to_owned();
    let url = recovery_url(&server, &client);
    client.abort();
    assert_eventually!(
        server
            .router()
            .connection(HUB, &id)
            .is_some_and(|c| c.outbox().epoch() > 0),
        "the connection detached"
    );
    let r = rest
        .call(
            "POST",
            &format!("/api/hubs/{HUB}/groups/g/:closeConnections?{V}"),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(
        !server.router().connection_exists(HUB, &id),
        "removed at once"
    );
    assert!(!server.router().group_exists(HUB, "g"));
    let retry = JsonClient::connect_raw(&url, JSON_RELIABLE_SUBPROTOCOL).await;
    assert_eq!(retry.expect_close().await.code, 1008, "no recovery");
    assert_eq!(server.router().stats().connections, 0);
}
