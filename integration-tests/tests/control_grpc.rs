//! Every RPC of `hubcast.v1.Control`, through the Rust SDK against a real server, with the
//! effect observed on real WebSocket clients.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hubcast_integration_tests::{JsonClient, SimpleClient, TestServer};
use hubcast_sdk::proto::v1 as pb;
use hubcast_sdk::{
    Batch, ClientTokenOptions, CloseOptions, Message, Operation, PageRequest, Permission,
    SendOptions, ServiceError as Error,
};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const HUB: &str = "chat";

#[tokio::test]
async fn sends_reach_the_addressed_clients_in_every_data_type() {
    let server = TestServer::start().await;
    let client = server.service_client().await;
    let mut alice = server.json_client(HUB, Some("alice"), &[], &["g"]).await;
    let mut bob = server.json_client(HUB, Some("bob"), &[], &[]).await;
    let mut simple = SimpleClient::connect(&server.url(HUB, None, &[], &["g"])).await;
    // A simple client gets no `connected` message: wait until the server has registered it.
    hubcast_integration_tests::assert_eventually!(server.router().stats().connections == 3);

    // To all: a server message; simple clients get the raw text.
    client
        .send_to_all(HUB, "hello all", SendOptions::new())
        .await
        .expect("send to all");
    for c in [&mut alice, &mut bob] {
        let m = c.recv_message().await;
        assert_eq!(
            m,
            json!({"type":"message","from":"server","dataType":"text","data":"hello all"})
        );
    }
    assert_eq!(simple.recv().await, WsMessage::text("hello all"));

    // To all but bob, JSON.
    client
        .send_to_all(
            HUB,
            Message::json(r#"{"n":1}"#),
            SendOptions::new().exclude(bob.connection_id()),
        )
        .await
        .expect("send to all");
    let m = alice.recv_message().await;
    assert_eq!(
        (m["dataType"].clone(), m["data"].clone()),
        (json!("json"), json!({"n":1}))
    );
    assert_eq!(simple.recv().await, WsMessage::text(r#"{"n":1}"#));
    bob.expect_nothing_queued().await;

    // To a group, binary: a group message without fromUserId; raw bytes to simple clients.
    client
        .send_to_group(HUB, "g", Message::binary(vec![1, 2, 3]), SendOptions::new())
        .await
        .expect("send to group");
    assert_eq!(
        alice.recv_message().await,
        json!({"type":"message","from":"group","fromUserId":null,"group":"g","dataType":"binary","data":"AQID"})
    );
    assert_eq!(simple.recv().await, WsMessage::binary(vec![1u8, 2, 3]));
    bob.expect_nothing_queued().await;

    // To a user, with a TTL (delivered: the client reads in time).
    client
        .send_to_user(
            HUB,
            "bob",
            Message::json("[true]"),
            SendOptions::new().ttl(Duration::from_secs(30)),
        )
        .await
        .expect("send to user");
    assert_eq!(bob.recv_message().await["data"], json!([true]));
    alice.expect_nothing_queued().await;

    // To a connection, protobuf.
    client
        .send_to_connection(
            HUB,
            alice.connection_id(),
            Message::protobuf(vec![9]),
            SendOptions::new(),
        )
        .await
        .expect("send to connection");
    let m = alice.recv_message().await;
    assert_eq!(
        (m["dataType"].clone(), m["data"].clone()),
        (json!("protobuf"), json!("CQ=="))
    );
    bob.expect_nothing_queued().await;

    // Fire-and-forget: nobody there is fine.
    client
        .send_to_connection(HUB, "nobody", "x", SendOptions::new())
        .await
        .expect("send to a missing connection succeeds");
    client
        .send_to_group(HUB, "empty", "x", SendOptions::new())
        .await
        .expect("send to an empty group succeeds");

    // Refusals.
    let too_long = client
        .send_to_all(HUB, "x", SendOptions::new().ttl(Duration::from_secs(301)))
        .await;
    assert!(
        matches!(&too_long, Err(Error::InvalidArgument(m)) if m.contains("300")),
        "{too_long:?}"
    );
    let bad_json = client
        .send_to_all(HUB, Message::json("{nope"), SendOptions::new())
        .await;
    assert!(
        matches!(&bad_json, Err(Error::InvalidArgument(m)) if m.contains("JSON")),
        "{bad_json:?}"
    );
    let bad_hub = client.send_to_all("1hub", "x", SendOptions::new()).await;
    assert!(
        matches!(bad_hub, Err(Error::InvalidArgument(_))),
        "{bad_hub:?}"
    );
    alice.expect_nothing_queued().await;
    bob.expect_nothing_queued().await;
}

#[tokio::test]
async fn connection_group_membership() {
    let server = TestServer::start().await;
    let client = server.service_client().await;
    let mut a = server.json_client(HUB, Some("a"), &[], &["x", "y"]).await;
    let id = a.connection_id().to_owned();

    assert!(!client.group_exists(HUB, "g").await.expect("exists"));
    client
        .add_connection_to_group(HUB, "g", &id)
        .await
        .expect("add");
    assert!(client.group_exists(HUB, "g").await.expect("exists"));
    client
        .send_to_group(HUB, "g", "in g", SendOptions::new())
        .await
        .expect("send");
    assert_eq!(a.recv_message().await["data"], "in g");

    client
        .remove_connection_from_group(HUB, "g", &id)
        .await
        .expect("remove");
    assert!(!client.group_exists(HUB, "g").await.expect("exists"));
    client
        .send_to_group(HUB, "g", "not for a", SendOptions::new())
        .await
        .expect("send");
    a.expect_nothing_queued().await;

    let missing = client.add_connection_to_group(HUB, "g", "missing").await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
    let bad_group = client.add_connection_to_group(HUB, "   ", &id).await;
    assert!(
        matches!(bad_group, Err(Error::InvalidArgument(_))),
        "{bad_group:?}"
    );

    client
        .remove_connection_from_all_groups(HUB, &id)
        .await
        .expect("remove from all");
    for g in ["x", "y"] {
        assert!(!client.group_exists(HUB, g).await.expect("exists"));
    }
    client
        .remove_connection_from_all_groups(HUB, "missing")
        .await
        .expect("idempotent");
}

#[tokio::test]
async fn user_group_membership_applies_to_every_connection_of_the_user() {
    let server = TestServer::start().await;
    let client = server.service_client().await;
    let mut u1 = server.json_client(HUB, Some("u"), &[], &["old"]).await;
    let mut u2 = server.json_client(HUB, Some("u"), &[], &[]).await;
    let mut other = server.json_client(HUB, Some("other"), &[], &[]).await;

    client
        .add_user_to_group(HUB, "g", "u")
        .await
        .expect("add user");
    client
        .add_user_to_group(HUB, "g", "nobody")
        .await
        .expect("a user without connections is fine");
    client
        .send_to_group(HUB, "g", "to g", SendOptions::new())
        .await
        .expect("send");
    assert_eq!(u1.recv_message().await["data"], "to g");
    assert_eq!(u2.recv_message().await["data"], "to g");
    other.expect_nothing_queued().await;

    client
        .remove_user_from_group(HUB, "g", "u")
        .await
        .expect("remove user");
    assert!(!client.group_exists(HUB, "g").await.expect("exists"));
    assert!(client.group_exists(HUB, "old").await.expect("exists"));

    client
        .remove_user_from_all_groups(HUB, "u")
        .await
        .expect("remove user from all");
    assert!(!client.group_exists(HUB, "old").await.expect("exists"));
    client
        .send_to_group(HUB, "old", "gone", SendOptions::new())
        .await
        .expect("send");
    u1.expect_nothing_queued().await;
}

#[tokio::test]
async fn filtered_connections_to_and_from_groups() {
    let server = TestServer::start().await;
    let client = server.service_client().await;
    let mut vip = server.json_client(HUB, Some("vip"), &[], &[]).await;
    let mut pleb = server.json_client(HUB, Some("pleb"), &[], &[]).await;

    client
        .add_connections_to_groups(HUB, &["lounge", "bar"], "userId eq 'vip'")
        .await
        .expect("add filtered");
    for g in ["lounge", "bar"] {
        client
            .send_to_group(HUB, g, g, SendOptions::new())
            .await
            .expect("send");
        assert_eq!(vip.recv_message().await["data"], g);
    }
    pleb.expect_nothing_queued().await;

    client
        .remove_connections_from_groups(HUB, &["lounge"], "startswith(userId, 'v')")
        .await
        .expect("remove filtered");
    assert!(!client.group_exists(HUB, "lounge").await.expect("exists"));
    assert!(client.group_exists(HUB, "bar").await.expect("exists"));

    // No filter: everyone.
    client
        .add_connections_to_groups(HUB, &["all"], "")
        .await
        .expect("add all");
    let page = client
        .list_group_connections(HUB, "all", PageRequest::first(10))
        .await
        .expect("list");
    assert_eq!(page.items.len(), 2);

    let bad = client
        .add_connections_to_groups(HUB, &["x"], "userId eq")
        .await;
    assert!(
        matches!(&bad, Err(Error::InvalidArgument(m)) if m.contains("position 9")),
        "{bad:?}"
    );
    let none = client.add_connections_to_groups(HUB, &[], "").await;
    assert!(matches!(none, Err(Error::InvalidArgument(_))), "{none:?}");
}

#[tokio::test]
async fn closes_send_disconnected_with_the_reason_and_honour_excluded() {
    let server = TestServer::start().await;
    let client = server.service_client().await;

    let one = server.json_client(HUB, Some("one"), &[], &[]).await;
    let id = one.connection_id().to_owned();
    client
        .close_connection(HUB, &id, "bye now")
        .await
        .expect("close");
    assert!(!client.connection_exists(HUB, &id).await.expect("exists"));
    let closed = one.expect_close().await;
    assert_eq!(closed.expect_disconnected(), "bye now");
    assert_eq!((closed.code, closed.reason.as_str()), (1000, "bye now"));
    client
        .close_connection(HUB, &id, "again")
        .await
        .expect("closing a gone connection succeeds");

    // A group, except one member.
    let g1 = server.json_client(HUB, None, &[], &["g"]).await;
    let mut g2 = server.json_client(HUB, None, &[], &["g"]).await;
    let mut outsider = server.json_client(HUB, None, &[], &[]).await;
    client
        .close_group_connections(HUB, "g", CloseOptions::new().exclude(g2.connection_id()))
        .await
        .expect("close group");
    let closed = g1.expect_close().await;
    assert_eq!(
        closed.expect_disconnected(),
        "The connection was closed by the service."
    );
    g2.ping().await;
    outsider.ping().await;

    // A user.
    let u1 = server.json_client(HUB, Some("u"), &[], &[]).await;
    let u2 = server.json_client(HUB, Some("u"), &[], &[]).await;
    client
        .close_user_connections(HUB, "u", CloseOptions::new().reason("user banned"))
        .await
        .expect("close user");
    for c in [u1, u2] {
        assert_eq!(c.expect_close().await.expect_disconnected(), "user banned");
    }
    assert!(!client.user_exists(HUB, "u").await.expect("exists"));

    // Everyone but g2.
    client
        .close_all_connections(
            HUB,
            CloseOptions::new()
                .exclude(g2.connection_id())
                .reason("all"),
        )
        .await
        .expect("close all");
    assert_eq!(outsider.expect_close().await.expect_disconnected(), "all");
    g2.ping().await;
    assert_eq!(client.hub_stats(HUB).await.expect("stats").connections, 1);
}

#[tokio::test]
async fn existence_checks_answer_true_and_false() {
    let server = TestServer::start().await;
    let client = server.service_client().await;
    let a = server.json_client(HUB, Some("alice"), &[], &["g"]).await;
    assert!(
        client
            .connection_exists(HUB, a.connection_id())
            .await
            .expect("exists")
    );
    assert!(
        client
            .connection_exists("CHAT", a.connection_id())
            .await
            .expect("hub is case-insensitive")
    );
    assert!(!client.connection_exists(HUB, "nope").await.expect("exists"));
    assert!(
        !client
            .connection_exists("other", a.connection_id())
            .await
            .expect("exists")
    );
    assert!(client.group_exists(HUB, "g").await.expect("exists"));
    assert!(
        !client
            .group_exists(HUB, "G")
            .await
            .expect("group names are case-sensitive")
    );
    assert!(client.user_exists(HUB, "alice").await.expect("exists"));
    assert!(!client.user_exists(HUB, "bob").await.expect("exists"));
    a.close().await;
    hubcast_integration_tests::assert_eventually!(
        !client.user_exists(HUB, "alice").await.expect("exists"),
        "alice still exists after closing"
    );
}

#[tokio::test]
async fn permissions_granted_and_revoked_at_runtime_take_effect() {
    let server = TestServer::start().await;
    let client = server.service_client().await;
    let mut c = server.json_client(HUB, Some("c"), &[], &[]).await;
    let id = c.connection_id().to_owned();

    // No role: joining is forbidden.
    c.send(json!({"type":"joinGroup","group":"g","ackId":1}))
        .await;
    c.expect_ack_error(1, "Forbidden").await;
    let join = Permission::JoinLeaveGroup;
    assert!(
        !client
            .check_permission(HUB, &id, join, Some("g"))
            .await
            .expect("check")
    );

    client
        .grant_permission(HUB, &id, join, Some("g"))
        .await
        .expect("grant");
    assert!(
        client
            .check_permission(HUB, &id, join, Some("g"))
            .await
            .expect("check")
    );
    assert!(
        !client
            .check_permission(HUB, &id, join, None)
            .await
            .expect("check all")
    );
    c.join("g").await;
    c.send(json!({"type":"joinGroup","group":"h","ackId":2}))
        .await;
    c.expect_ack_error(2, "Forbidden").await;

    client
        .revoke_permission(HUB, &id, join, Some("g"))
        .await
        .expect("revoke");
    c.send(json!({"type":"leaveGroup","group":"g","ackId":3}))
        .await;
    c.expect_ack_error(3, "Forbidden").await;

    let send = Permission::SendToGroup;
    client
        .grant_permission(HUB, &id, send, None)
        .await
        .expect("grant all");
    assert!(
        client
            .check_permission(HUB, &id, send, None)
            .await
            .expect("check")
    );
    assert!(
        client
            .check_permission(HUB, &id, send, Some("any"))
            .await
            .expect("check")
    );
    c.publish_text("g", "now allowed").await;
    assert_eq!(c.recv_message().await["data"], "now allowed");
    client
        .revoke_permission(HUB, &id, send, None)
        .await
        .expect("revoke all");
    c.send(json!({"type":"sendToGroup","group":"g","dataType":"text","data":"x","ackId":4}))
        .await;
    c.expect_ack_error(4, "Forbidden").await;

    let missing = client.grant_permission(HUB, "missing", send, None).await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
    assert!(
        !client
            .check_permission(HUB, "missing", send, None)
            .await
            .expect("check")
    );
    client
        .revoke_permission(HUB, "missing", send, None)
        .await
        .expect("revoking from a missing connection succeeds");
}

#[tokio::test]
async fn client_tokens_from_the_service_and_minted_locally_connect() {
    let server = TestServer::start().await;
    let client = server.service_client().await;
    let options = ClientTokenOptions::user("tok")
        .role("webpubsub.joinLeaveGroup")
        .group("start")
        .expires_in(Duration::from_secs(600));

    let remote = client
        .generate_client_token(HUB, &options)
        .await
        .expect("generate");
    assert!(remote.url.ends_with(&remote.token));
    let mut c = JsonClient::connect(&remote.url).await;
    assert_eq!(c.user_id(), Some("tok"));
    c.join("other").await;
    assert!(client.group_exists(HUB, "start").await.expect("exists"));

    let local = client.client_access(HUB, &options);
    let c2 = JsonClient::connect(&local.url).await;
    assert_eq!(c2.user_id(), Some("tok"));

    let bad = client.generate_client_token("bad hub", &options).await;
    assert!(matches!(bad, Err(Error::InvalidArgument(_))), "{bad:?}");
}

#[tokio::test]
async fn listings_details_and_stats() {
    let server = TestServer::start().await;
    let client = server.service_client().await;
    let mut members = Vec::new();
    for i in 0..5 {
        let user = if i % 2 == 0 { "even" } else { "odd" };
        members.push(server.json_client(HUB, Some(user), &[], &["g"]).await);
    }
    let anon = SimpleClient::connect(&server.url(HUB, None, &[], &["solo"])).await;
    hubcast_integration_tests::assert_eventually!(server.router().stats().connections == 6);

    // Group members, two per page, in id order, every member once.
    let mut seen = Vec::new();
    let mut request = Some(PageRequest::first(2));
    while let Some(r) = request.take() {
        let page = client
            .list_group_connections(HUB, "g", r)
            .await
            .expect("list group");
        assert!(page.items.len() <= 2);
        seen.extend(
            page.items
                .iter()
                .map(|m| (m.connection_id.clone(), m.user_id.clone())),
        );
        request = page.next(2);
    }
    let mut expected: Vec<_> = members
        .iter()
        .map(|m| (m.connection_id().to_owned(), m.user_id().map(str::to_owned)))
        .collect();
    expected.sort();
    assert_eq!(seen, expected);

    // Connections of a user; of the hub with a filter.
    let odd = client
        .list_connections(HUB, Some("odd"), "", PageRequest::first(100))
        .await
        .expect("list user");
    assert_eq!(odd.items.len(), 2);
    assert!(odd.next_page_token.is_none());
    let simple = client
        .list_connections(HUB, None, "protocol eq null", PageRequest::first(100))
        .await
        .expect("list filtered");
    assert_eq!(simple.items.len(), 1);
    let info = &simple.items[0];
    assert_eq!(info.groups, ["solo"]);
    assert_eq!(info.subprotocol, "");
    assert_eq!(info.user_id, None);

    // One connection's details.
    let m = &members[0];
    let info = client
        .get_connection(HUB, m.connection_id())
        .await
        .expect("get");
    assert_eq!(info.connection_id, m.connection_id());
    assert_eq!(info.hub, HUB);
    assert_eq!(info.user_id.as_deref(), Some("even"));
    assert_eq!(info.groups, ["g"]);
    assert_eq!(info.subprotocol, "json.webpubsub.azure.v1");
    assert!(
        info.remote_address.starts_with("127.0.0.1:"),
        "{}",
        info.remote_address
    );
    let since = info.connected_at.expect("connected_at").seconds;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        now.abs_diff(u64::try_from(since).expect("positive")) < 60,
        "{since} vs {now}"
    );
    let missing = client.get_connection(HUB, "missing").await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");

    // Groups and stats.
    let groups = client
        .list_groups(HUB, PageRequest::first(1))
        .await
        .expect("groups");
    assert_eq!(groups.items.len(), 1);
    assert_eq!(
        (
            groups.items[0].name.as_str(),
            groups.items[0].connection_count
        ),
        ("g", 5)
    );
    let rest = client
        .list_groups(HUB, groups.next(10).expect("more"))
        .await
        .expect("groups");
    assert_eq!(
        rest.items
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>(),
        ["solo"]
    );
    let stats = client.hub_stats(HUB).await.expect("stats");
    assert_eq!((stats.connections, stats.users, stats.groups), (6, 2, 2));

    // A page token from another listing is refused.
    let token = groups.next_page_token.expect("token");
    let wrong = client
        .list_connections(
            HUB,
            None,
            "",
            PageRequest {
                size: 10,
                token: Some(token),
            },
        )
        .await;
    assert!(matches!(wrong, Err(Error::InvalidArgument(_))), "{wrong:?}");
    drop(anon);
}

#[tokio::test]
async fn batches_apply_in_order_and_stop_at_the_first_failure() {
    let server = TestServer::start().await;
    let client = server.service_client().await;
    let mut a = server.json_client(HUB, Some("a"), &[], &[]).await;

    let text = |s: &str| Some(Message::text(s).into_payload());
    let results = client
        .batch(
            Batch::new()
                .push(Operation::AddUserToGroup(pb::AddUserToGroupRequest {
                    hub: HUB.into(),
                    group: "g".into(),
                    user_id: "a".into(),
                }))
                .push(Operation::SendToGroup(pb::SendToGroupRequest {
                    hub: HUB.into(),
                    group: "g".into(),
                    payload: text("first"),
                    ..Default::default()
                }))
                .push(Operation::AddConnectionToGroup(
                    pb::AddConnectionToGroupRequest {
                        hub: HUB.into(),
                        group: "g".into(),
                        connection_id: "missing".into(),
                    },
                ))
                .push(Operation::SendToGroup(pb::SendToGroupRequest {
                    hub: HUB.into(),
                    group: "g".into(),
                    payload: text("never"),
                    ..Default::default()
                })),
        )
        .await
        .expect("batch");
    assert_eq!(
        results.iter().map(|r| r.code).collect::<Vec<_>>(),
        [0, 0, tonic::Code::NotFound as i32],
        "{results:?}"
    );
    assert!(results[2].message.contains("missing"));
    assert_eq!(a.recv_message().await["data"], "first");
    a.expect_nothing_queued().await;

    let results = client
        .batch(
            Batch::new()
                .push(Operation::SendToGroup(pb::SendToGroupRequest {
                    hub: HUB.into(),
                    group: " ".into(),
                    payload: text("bad group"),
                    ..Default::default()
                }))
                .push(Operation::SendToUser(pb::SendToUserRequest {
                    hub: HUB.into(),
                    user_id: "a".into(),
                    payload: text("second"),
                    ..Default::default()
                }))
                .continue_on_error(),
        )
        .await
        .expect("batch");
    assert_eq!(
        results.iter().map(|r| r.code).collect::<Vec<_>>(),
        [tonic::Code::InvalidArgument as i32, 0]
    );
    assert_eq!(a.recv_message().await["data"], "second");

    // A malformed batch fails as a whole.
    let mut raw = client.raw();
    let status = raw
        .batch(pb::BatchRequest {
            operations: vec![pb::BatchOperation { operation: None }],
            continue_on_error: false,
        })
        .await
        .expect_err("an empty operation is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}
