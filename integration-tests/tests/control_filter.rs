//! OData filters end to end: sends and group operations with filters over REST and gRPC
//! reach exactly the matching WebSocket clients; invalid filters are refused with the
//! position of the problem.

use hubcast_integration_tests::{JsonClient, SimpleClient, TestServer, enc};
use hubcast_sdk::{SendOptions, ServiceError as Error};
use serde_json::json;

const HUB: &str = "chat";

/// alice (vip), bob, an anonymous JSON client in `vip`, and an anonymous simple client.
async fn clients(server: &TestServer) -> (JsonClient, JsonClient, JsonClient, SimpleClient) {
    let alice = server
        .json_client(HUB, Some("alice"), &[], &["vip", "room"])
        .await;
    let bob = server.json_client(HUB, Some("bob"), &[], &["room"]).await;
    let anon = server.json_client(HUB, None, &[], &["vip"]).await;
    let simple = SimpleClient::connect(&server.url(HUB, None, &[], &[])).await;
    // A simple client gets no `connected` message: wait until the server has registered it.
    hubcast_integration_tests::assert_eventually!(server.router().stats().connections == 4);
    (alice, bob, anon, simple)
}

#[tokio::test]
async fn rest_sends_with_filters_reach_exactly_the_matching_clients() {
    let server = TestServer::start().await;
    let rest = server.rest();
    let (mut alice, mut bob, mut anon, mut simple) = clients(&server).await;
    let send = |path: String, filter: &str, text: &'static str| {
        let rest = rest.clone();
        let query = format!("{path}?api-version=2024-12-01&filter={}", enc(filter));
        async move {
            let r = rest
                .call("POST", &query, Some(("text/plain", text.as_bytes())))
                .await;
            assert_eq!(r.status, 202, "{r:?}");
        }
    };

    send(
        "/api/hubs/chat/:send".into(),
        "'vip' in groups and userId ne null",
        "1",
    )
    .await;
    assert_eq!(alice.recv_message().await["data"], "1");
    send(
        "/api/hubs/chat/:send".into(),
        "userId eq null and protocol eq null",
        "2",
    )
    .await;
    assert_eq!(simple.recv().await.into_text().expect("text").as_str(), "2");
    send(
        "/api/hubs/chat/groups/room/:send".into(),
        "userId in ('bob', 'carol')",
        "3",
    )
    .await;
    assert_eq!(bob.recv_message().await["data"], "3");
    send(
        "/api/hubs/chat/users/alice/:send".into(),
        "length(groups) eq 2",
        "4",
    )
    .await;
    assert_eq!(alice.recv_message().await["data"], "4");
    send(
        "/api/hubs/chat/users/bob/:send".into(),
        "length(groups) eq 2",
        "5",
    )
    .await;
    send(
        "/api/hubs/chat/:send".into(),
        &format!("connectionId eq '{}'", anon.connection_id()),
        "6",
    )
    .await;
    assert_eq!(anon.recv_message().await["data"], "6");
    send(
        "/api/hubs/chat/:send".into(),
        "userId eq 'o''brien' or startswith(tolower(userId), 'ALI')",
        "7",
    )
    .await;
    // Nobody: the second test is case-sensitive.
    for c in [&mut alice, &mut bob, &mut anon] {
        c.expect_nothing_queued().await;
    }

    // Invalid filters: 400, target `filter`, the position in the message; nothing sent.
    let r = rest
        .call(
            "POST",
            &format!(
                "/api/hubs/chat/:send?api-version=2024-12-01&filter={}",
                enc("userId eq 'a' and")
            ),
            Some(("text/plain", b"x")),
        )
        .await;
    let body = r.expect_error(400, Some("filter"));
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("position 17"),
        "{body}"
    );
    let body = rest
        .call(
            "POST",
            &format!(
                "/api/hubs/chat/:send?api-version=2024-12-01&filter={}",
                enc("not length(userId) gt 5")
            ),
            Some(("text/plain", b"x")),
        )
        .await
        .expect_error(400, Some("filter"));
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("'not' needs a boolean")
    );
    alice.expect_nothing_queued().await;
}

#[tokio::test]
async fn rest_filtered_group_operations() {
    let server = TestServer::start().await;
    let rest = server.rest();
    let (mut alice, mut bob, mut anon, _simple) = clients(&server).await;
    let body = json!({"groups": ["news"], "filter": "'room' in groups"}).to_string();
    let r = rest
        .call(
            "POST",
            "/api/hubs/chat/:addToGroups?api-version=2024-12-01",
            Some(("application/json", body.as_bytes())),
        )
        .await;
    assert_eq!(r.status, 200);
    let body = json!({"groups": ["news"], "filter": "userId eq 'bob'"}).to_string();
    let r = rest
        .call(
            "POST",
            "/api/hubs/chat/:removeFromGroups?api-version=2024-12-01",
            Some(("application/json", body.as_bytes())),
        )
        .await;
    assert_eq!(r.status, 200);
    rest.call(
        "POST",
        "/api/hubs/chat/groups/news/:send?api-version=2024-12-01",
        Some(("text/plain", b"news")),
    )
    .await;
    assert_eq!(alice.recv_message().await["data"], "news");
    bob.expect_nothing_queued().await;
    anon.expect_nothing_queued().await;

    let body = json!({"groups": ["x"], "filter": "nickname eq 'a'"}).to_string();
    let r = rest
        .call(
            "POST",
            "/api/hubs/chat/:addToGroups?api-version=2024-12-01",
            Some(("application/json", body.as_bytes())),
        )
        .await;
    let error = r.expect_error(400, Some("filter"));
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("position 0")
    );
}

#[tokio::test]
async fn grpc_sends_with_filters_reach_exactly_the_matching_clients() {
    let server = TestServer::start().await;
    let client = server.service_client().await;
    let (mut alice, mut bob, mut anon, _simple) = clients(&server).await;

    client
        .send_to_all(HUB, "vip", SendOptions::new().filter("'vip' in groups"))
        .await
        .expect("send");
    assert_eq!(alice.recv_message().await["data"], "vip");
    assert_eq!(anon.recv_message().await["data"], "vip");
    bob.expect_nothing_queued().await;

    client
        .send_to_group(
            HUB,
            "room",
            "not alice",
            SendOptions::new().filter("not (userId eq 'alice')"),
        )
        .await
        .expect("send");
    assert_eq!(bob.recv_message().await["data"], "not alice");
    alice.expect_nothing_queued().await;

    client
        .send_to_user(
            HUB,
            "alice",
            "never",
            SendOptions::new().filter("contains(connectionId, 'no such id')"),
        )
        .await
        .expect("send");
    alice.expect_nothing_queued().await;

    let bad = client
        .send_to_all(HUB, "x", SendOptions::new().filter("userId eq 1"))
        .await;
    assert!(
        matches!(&bad, Err(Error::InvalidArgument(m)) if m.contains("position 10")),
        "{bad:?}"
    );
    let listed = client
        .list_connections(
            HUB,
            None,
            "'vip' in groups",
            hubcast_sdk::PageRequest::first(10),
        )
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 2);
}
