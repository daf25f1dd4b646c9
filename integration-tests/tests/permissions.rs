//! Roles and permissions (spec §4.3): which groups a connection may join, leave and publish
//! to, and groups joined through the token.
//!
//! A refusal is a `Forbidden` ack, and it must have no effect: the group is not joined, the
//! message is not delivered. Deliveries are checked by ordering: a later message that is
//! allowed must be the next thing a member receives.

use hubcast_integration_tests::{JOIN_ROLE, JsonClient, SEND_ROLE, TestServer};
use serde_json::json;

const HUB: &str = "perms";

async fn join_result(client: &mut JsonClient, group: &str, ack_id: u64) -> serde_json::Value {
    client
        .send(json!({"type": "joinGroup", "group": group, "ackId": ack_id}))
        .await;
    client.ack(ack_id).await
}

async fn assert_join_allowed(server: &TestServer, client: &mut JsonClient, group: &str, ack: u64) {
    let result = join_result(client, group, ack).await;
    assert_eq!(result["success"], true, "join {group:?}: {result}");
    assert!(
        server.router().group_exists(HUB, group),
        "group {group:?} exists after a successful join"
    );
}

async fn assert_join_forbidden(
    server: &TestServer,
    client: &mut JsonClient,
    group: &str,
    ack: u64,
) {
    client
        .send(json!({"type": "joinGroup", "group": group, "ackId": ack}))
        .await;
    client.expect_ack_error(ack, "Forbidden").await;
    assert!(
        !server.router().group_exists(HUB, group),
        "a forbidden join must not create group {group:?}"
    );
}

/// `publisher` sends to `group` with `ack`; `member` is in `group`. Returns whether the send
/// was allowed, after checking the member got it exactly when it was.
async fn try_publish(
    publisher: &mut JsonClient,
    member: &mut JsonClient,
    control: &mut JsonClient,
    group: &str,
    ack: u64,
) -> bool {
    let text = format!("to {group} with ack {ack}");
    publisher
        .send(json!({
            "type": "sendToGroup", "group": group, "ackId": ack,
            "dataType": "text", "data": text,
        }))
        .await;
    let result = publisher.ack(ack).await;
    let allowed = result["success"] == true;
    if !allowed {
        assert_eq!(result["error"]["name"], "Forbidden", "{result}");
        assert!(result["error"]["message"].is_string(), "{result}");
    }
    // A marker from an allowed publisher: if the first send was delivered, it arrives
    // before the marker.
    let marker = format!("marker after {ack}");
    control.publish_text(group, &marker).await;
    let first = member.recv_message().await;
    if allowed {
        assert_eq!(first["data"], text.as_str(), "{first}");
        let second = member.recv_message().await;
        assert_eq!(second["data"], marker.as_str(), "{second}");
    } else {
        assert_eq!(
            first["data"],
            marker.as_str(),
            "a forbidden send must not be delivered; got {first}"
        );
    }
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_roles_may_neither_join_nor_send() {
    let server = TestServer::start().await;
    let mut nobody = server.json_client(HUB, Some("nobody"), &[], &[]).await;
    let mut member = server.json_client(HUB, Some("m"), &[JOIN_ROLE], &[]).await;
    let mut control = server.json_client(HUB, Some("c"), &[SEND_ROLE], &[]).await;
    member.join("room").await;

    assert_join_forbidden(&server, &mut nobody, "lobby", 1).await;
    nobody
        .send(json!({"type": "leaveGroup", "group": "room", "ackId": 2}))
        .await;
    nobody.expect_ack_error(2, "Forbidden").await;
    assert!(!try_publish(&mut nobody, &mut member, &mut control, "room", 3).await);
    // Still connected and usable after refusals.
    nobody.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_roles_allow_any_group() {
    let server = TestServer::start().await;
    let mut client = server
        .json_client(HUB, Some("admin"), &[JOIN_ROLE, SEND_ROLE], &[])
        .await;
    let mut member = server.json_client(HUB, Some("m"), &[JOIN_ROLE], &[]).await;
    let mut control = server.json_client(HUB, Some("c"), &[SEND_ROLE], &[]).await;

    assert_join_allowed(&server, &mut client, "anything", 1).await;
    assert_join_allowed(&server, &mut client, "a.b.c", 2).await;
    client
        .send(json!({"type": "leaveGroup", "group": "a.b.c", "ackId": 3}))
        .await;
    client.expect_ack_ok(3).await;
    assert!(!server.router().group_exists(HUB, "a.b.c"));

    member.join("news").await;
    assert!(try_publish(&mut client, &mut member, &mut control, "news", 4).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_role_does_not_grant_send_and_send_role_does_not_grant_join() {
    let server = TestServer::start().await;
    let mut joiner = server.json_client(HUB, Some("j"), &[JOIN_ROLE], &[]).await;
    let mut sender = server.json_client(HUB, Some("s"), &[SEND_ROLE], &[]).await;
    let mut member = server.json_client(HUB, Some("m"), &[JOIN_ROLE], &[]).await;
    let mut control = server.json_client(HUB, Some("c"), &[SEND_ROLE], &[]).await;
    member.join("room").await;

    assert_join_forbidden(&server, &mut sender, "elsewhere", 1).await;
    assert!(try_publish(&mut sender, &mut member, &mut control, "room", 2).await);

    assert_join_allowed(&server, &mut joiner, "room", 3).await;
    assert!(!try_publish(&mut joiner, &mut member, &mut control, "room", 4).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_scoped_roles_allow_exactly_that_group() {
    let server = TestServer::start().await;
    let mut client = server
        .json_client(
            HUB,
            Some("scoped"),
            &[
                "webpubsub.joinLeaveGroup.room1",
                "webpubsub.sendToGroup.room1",
            ],
            &[],
        )
        .await;
    let mut member = server.json_client(HUB, Some("m"), &[JOIN_ROLE], &[]).await;
    let mut control = server.json_client(HUB, Some("c"), &[SEND_ROLE], &[]).await;
    member.join("room1").await;
    member.join("room2").await;

    assert_join_allowed(&server, &mut client, "room1", 1).await;
    assert_join_forbidden(&server, &mut client, "room10", 2).await;
    assert_join_forbidden(&server, &mut client, "room", 3).await;
    client
        .send(json!({"type": "leaveGroup", "group": "room2", "ackId": 4}))
        .await;
    client.expect_ack_error(4, "Forbidden").await;
    client
        .send(json!({"type": "leaveGroup", "group": "room1", "ackId": 5}))
        .await;
    client.expect_ack_ok(5).await;

    assert!(try_publish(&mut client, &mut member, &mut control, "room1", 6).await);
    assert!(!try_publish(&mut client, &mut member, &mut control, "room2", 7).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_join_roles_follow_the_pattern_rules() {
    let server = TestServer::start().await;
    let mut client = server
        .json_client(
            HUB,
            Some("wild"),
            &[
                "webpubsub.joinLeaveGroups.chat-*",
                "webpubsub.joinLeaveGroups.clientA.**",
                "webpubsub.joinLeaveGroups.rooms.?1",
            ],
            &[],
        )
        .await;

    let mut ack = 0;
    for group in [
        "chat-1",
        "chat-",
        "chat-abc",
        "clientA.alpha.room1",
        "clientA.x",
        "rooms.a1",
    ] {
        ack += 1;
        assert_join_allowed(&server, &mut client, group, ack).await;
    }
    for group in [
        "chat.1",    // `*` never crosses a dot
        "chat-1.x",  // nor matches one
        "chatroom",  // the literal prefix is required
        "clientB.x", // another prefix
        "clientA",   // `clientA.**` needs the dot
        "rooms.1",   // `?` is exactly one character
        "rooms.ab1", // and only one
        "rooms..1",  // and never a dot
        "Chat-1",    // case-sensitive
    ] {
        ack += 1;
        assert_join_forbidden(&server, &mut client, group, ack).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_send_roles_follow_the_pattern_rules() {
    let server = TestServer::start().await;
    let mut client = server
        .json_client(
            HUB,
            Some("wild"),
            &[
                "webpubsub.sendToGroups.clientA.**",
                "webpubsub.sendToGroups.team-?",
            ],
            &[],
        )
        .await;
    let mut member = server.json_client(HUB, Some("m"), &[JOIN_ROLE], &[]).await;
    let mut control = server.json_client(HUB, Some("c"), &[SEND_ROLE], &[]).await;
    let groups_allowed = ["clientA.alpha.room1", "clientA.b", "team-x"];
    let groups_denied = ["clientB.alpha", "team-xy", "team.x", "clientA"];
    for group in groups_allowed.iter().chain(&groups_denied) {
        member.join(group).await;
    }

    let mut ack = 0;
    for group in groups_allowed {
        ack += 1;
        assert!(
            try_publish(&mut client, &mut member, &mut control, group, ack).await,
            "send to {group:?} should be allowed"
        );
    }
    for group in groups_denied {
        ack += 1;
        assert!(
            !try_publish(&mut client, &mut member, &mut control, group, ack).await,
            "send to {group:?} should be forbidden"
        );
    }
    // A send pattern grants no join.
    assert_join_forbidden(&server, &mut client, "clientA.zzz", 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_groups_are_joined_at_connect_without_the_join_role() {
    let server = TestServer::start().await;
    let mut subscriber = server
        .json_client(HUB, Some("sub"), &[], &["news", "weather"])
        .await;
    assert!(server.router().group_exists(HUB, "news"));
    assert!(server.router().group_exists(HUB, "weather"));

    let mut publisher = server
        .json_client(HUB, Some("pub"), &[SEND_ROLE], &[])
        .await;
    publisher.publish_text("news", "extra!").await;
    let message = subscriber.recv_message().await;
    assert_eq!(message["group"], "news", "{message}");
    assert_eq!(message["data"], "extra!", "{message}");
    assert_eq!(message["fromUserId"], "pub", "{message}");

    publisher.publish_text("weather", "sunny").await;
    let message = subscriber.recv_message().await;
    assert_eq!(message["group"], "weather", "{message}");
    assert_eq!(message["data"], "sunny", "{message}");

    // Membership from the token grants no role: joining something else is still forbidden.
    assert_join_forbidden(&server, &mut subscriber, "sports", 1).await;
}
