//! Three nodes sharing the real Redis (each test under a key prefix of its own): clients on
//! node 1, a sender on node 2, control calls on node 3. Every messaging and control
//! behaviour of the single-node suite must hold across nodes; a node killed abruptly must
//! leave the cluster answers within its lease; a Redis that stops and comes back must be
//! survived without restarting Hubcast.

use hubcast_integration_tests::cluster::{NodeProcess, OwnRedis, TEST_LEASE, TestCluster};
use hubcast_integration_tests::{
    JSON_RELIABLE_SUBPROTOCOL, JsonClient, SEND_ROLE, TestServer, assert_eventually,
};
use hubcast_sdk::{CloseOptions, PageRequest, Permission, SendOptions, ServiceError};
use serde_json::{Value, json};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const HUB: &str = "chat";
const V: &str = "api-version=2024-12-01";

fn path(rest: &str) -> String {
    format!("/api/hubs/{HUB}{rest}?{V}")
}

fn text(m: &Value) -> &str {
    m["data"]
        .as_str()
        .unwrap_or_else(|| panic!("text data: {m}"))
}

/// Sends a marker to `client` from `via` and returns every message `client` received before
/// it. Messages from one node reach another in order, so this proves what did *not* arrive.
async fn before_marker(via: &TestServer, client: &mut JsonClient) -> Vec<String> {
    let grpc = via.service_client().await;
    grpc.send_to_connection(HUB, client.connection_id(), "marker", SendOptions::new())
        .await
        .expect("send marker");
    let mut seen = Vec::new();
    loop {
        let m = client.recv_message().await;
        if text(&m) == "marker" {
            return seen;
        }
        seen.push(text(&m).to_owned());
    }
}

#[tokio::test]
async fn connection_ids_name_their_node() {
    let cluster = TestCluster::start("ids", 2).await;
    let a = cluster.node(0).json_client(HUB, None, &[], &[]).await;
    let b = cluster.node(1).json_client(HUB, None, &[], &[]).await;
    let node = |s: &TestServer| {
        s.router().nodes()[0]
            .cluster()
            .expect("clustered")
            .node()
            .to_owned()
    };
    assert!(a.connection_id().starts_with(&node(cluster.node(0))));
    assert!(b.connection_id().starts_with(&node(cluster.node(1))));
    assert_ne!(node(cluster.node(0)), node(cluster.node(1)));
    assert_eq!(a.connection_id().len(), 22);
}

#[tokio::test]
async fn client_grpc_and_rest_sends_reach_clients_on_other_nodes() {
    let cluster = TestCluster::start("sends", 3).await;
    let (n1, n2, n3) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let mut alice = n1.json_client(HUB, Some("alice"), &[], &["g"]).await;
    let mut bob = n1.json_client(HUB, Some("bob"), &[], &[]).await;
    let mut sam = n2.json_client(HUB, Some("sam"), &[SEND_ROLE], &[]).await;

    // A client's group send from node 2 reaches the member on node 1, with its user id.
    sam.publish_text("g", "from node 2").await;
    assert_eq!(
        alice.recv_message().await,
        json!({"type":"message","from":"group","fromUserId":"sam","group":"g",
               "dataType":"text","data":"from node 2"})
    );
    // noEcho is honoured for the sender, and other members elsewhere still get it.
    let mut sam_member = n2.json_client(HUB, Some("sam"), &[SEND_ROLE], &["g"]).await;
    sam_member
        .send(
            json!({"type":"sendToGroup","group":"g","ackId":7,"noEcho":true,
                     "dataType":"json","data":{"n":1}}),
        )
        .await;
    sam_member.expect_ack_ok(7).await;
    let m = alice.recv_message().await;
    assert_eq!(
        (m["dataType"].clone(), m["data"].clone()),
        (json!("json"), json!({"n":1}))
    );

    // gRPC from node 3.
    let grpc = n3.service_client().await;
    grpc.send_to_all(HUB, "all", SendOptions::new())
        .await
        .expect("send to all");
    grpc.send_to_group(HUB, "g", "group", SendOptions::new())
        .await
        .expect("send to group");
    grpc.send_to_user(HUB, "bob", "user", SendOptions::new())
        .await
        .expect("send to user");
    grpc.send_to_connection(HUB, alice.connection_id(), "conn", SendOptions::new())
        .await
        .expect("send to connection");
    grpc.send_to_all(
        HUB,
        "all but alice",
        SendOptions::new().exclude(alice.connection_id()),
    )
    .await
    .expect("send with exclusion");
    grpc.send_to_all(
        HUB,
        "filtered",
        SendOptions::new().filter("userId eq 'bob'"),
    )
    .await
    .expect("filtered send");
    assert_eq!(
        before_marker(n3, &mut alice).await,
        ["all", "group", "conn"]
    );
    assert_eq!(
        before_marker(n3, &mut bob).await,
        ["all", "user", "all but alice", "filtered"]
    );

    // REST from node 3.
    let rest = n3.rest();
    for (target, data) in [
        ("/:send".to_owned(), "rest all"),
        ("/groups/g/:send".to_owned(), "rest group"),
        ("/users/bob/:send".to_owned(), "rest user"),
        (
            format!("/connections/{}/:send", alice.connection_id()),
            "rest conn",
        ),
    ] {
        let r = rest
            .call(
                "POST",
                &path(&target),
                Some(("text/plain", data.as_bytes())),
            )
            .await;
        assert_eq!(r.status, 202, "{target}: {r:?}");
    }
    assert_eq!(
        before_marker(n3, &mut alice).await,
        ["rest all", "rest group", "rest conn"]
    );
    assert_eq!(before_marker(n3, &mut bob).await, ["rest all", "rest user"]);
}

#[tokio::test]
async fn one_senders_group_messages_arrive_in_order_on_every_node() {
    let cluster = TestCluster::start("order", 3).await;
    let mut on1 = cluster.node(0).json_client(HUB, None, &[], &["g"]).await;
    let mut on3 = cluster.node(2).json_client(HUB, None, &[], &["g"]).await;
    let mut sender = cluster
        .node(1)
        .json_client(HUB, Some("s"), &[SEND_ROLE], &[])
        .await;
    const N: usize = 300;
    for i in 0..N {
        sender
            .send(json!({"type":"sendToGroup","group":"g","dataType":"text","data":i.to_string()}))
            .await;
    }
    // And from the control plane of node 3, interleaved with nothing else: in order too.
    let grpc = cluster.node(2).service_client().await;
    for i in 0..50 {
        grpc.send_to_group(HUB, "g", format!("c{i}"), SendOptions::new())
            .await
            .expect("send");
    }
    for client in [&mut on1, &mut on3] {
        let mut client_msgs = Vec::new();
        let mut control_msgs = Vec::new();
        while client_msgs.len() < N || control_msgs.len() < 50 {
            let m = client.recv_message().await;
            let t = text(&m).to_owned();
            if let Some(n) = t.strip_prefix('c') {
                control_msgs.push(n.parse::<usize>().expect("number"));
            } else {
                client_msgs.push(t.parse::<usize>().expect("number"));
            }
        }
        assert_eq!(client_msgs, (0..N).collect::<Vec<_>>());
        assert_eq!(control_msgs, (0..50).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn group_and_user_operations_on_connections_of_other_nodes() {
    let cluster = TestCluster::start("groups", 3).await;
    let (n1, n3) = (cluster.node(0), cluster.node(2));
    let mut alice = n1.json_client(HUB, Some("alice"), &[], &[]).await;
    let mut alice2 = n1.json_client(HUB, Some("alice"), &[], &[]).await;
    let mut bob = n1.json_client(HUB, Some("bob"), &[], &[]).await;
    let grpc = n3.service_client().await;
    let id = alice.connection_id().to_owned();

    // Connection ↔ group, routed to node 1.
    grpc.add_connection_to_group(HUB, "g", &id)
        .await
        .expect("add");
    assert!(grpc.group_exists(HUB, "g").await.expect("exists"));
    grpc.send_to_group(HUB, "g", "one", SendOptions::new())
        .await
        .expect("send");
    assert_eq!(text(&alice.recv_message().await), "one");
    grpc.remove_connection_from_group(HUB, "g", &id)
        .await
        .expect("remove");
    assert!(!grpc.group_exists(HUB, "g").await.expect("exists"));
    // An unknown connection, of a node that does not exist: not found, as on one node.
    let err = grpc
        .add_connection_to_group(HUB, "g", "zzzzzzAAAAAAAAAAAAAAAA")
        .await
        .expect_err("unknown connection");
    assert!(matches!(err, ServiceError::NotFound(_)), "{err:?}");
    // A bad group name is refused by the owner node with the single-node error.
    let err = grpc
        .add_connection_to_group(HUB, " ", &id)
        .await
        .expect_err("bad group");
    assert!(matches!(err, ServiceError::InvalidArgument(_)), "{err:?}");

    // User ↔ group: every connection of the user, wherever it is.
    let mut alice_on2 = cluster
        .node(1)
        .json_client(HUB, Some("alice"), &[], &[])
        .await;
    grpc.add_user_to_group(HUB, "h", "alice")
        .await
        .expect("add user");
    grpc.send_to_group(HUB, "h", "two", SendOptions::new())
        .await
        .expect("send");
    for c in [&mut alice, &mut alice2, &mut alice_on2] {
        assert_eq!(text(&c.recv_message().await), "two");
    }
    grpc.remove_user_from_group(HUB, "h", "alice")
        .await
        .expect("remove user");
    assert!(!grpc.group_exists(HUB, "h").await.expect("exists"));
    grpc.add_user_to_group(HUB, "x", "alice")
        .await
        .expect("add");
    grpc.add_user_to_group(HUB, "y", "alice")
        .await
        .expect("add");
    grpc.remove_user_from_all_groups(HUB, "alice")
        .await
        .expect("remove all");
    assert!(!grpc.group_exists(HUB, "x").await.expect("exists"));
    assert!(!grpc.group_exists(HUB, "y").await.expect("exists"));

    // Filtered add/remove over every node.
    grpc.add_connections_to_groups(HUB, &["f1", "f2"], "userId eq 'bob'")
        .await
        .expect("filtered add");
    grpc.send_to_group(HUB, "f2", "three", SendOptions::new())
        .await
        .expect("send");
    assert_eq!(before_marker(n3, &mut bob).await, ["three"]);
    assert_eq!(before_marker(n3, &mut alice).await, Vec::<String>::new());
    grpc.remove_connections_from_groups(HUB, &["f1", "f2"], "")
        .await
        .expect("filtered remove");
    assert!(!grpc.group_exists(HUB, "f1").await.expect("exists"));

    // remove from all groups, REST, routed.
    let rest = n3.rest();
    assert_eq!(
        rest.call("PUT", &path(&format!("/groups/r/connections/{id}")), None)
            .await
            .status,
        200
    );
    assert_eq!(
        rest.call("HEAD", &path("/groups/r"), None).await.status,
        200
    );
    assert_eq!(
        rest.call("DELETE", &path(&format!("/connections/{id}/groups")), None)
            .await
            .status,
        204
    );
    assert_eq!(
        rest.call("HEAD", &path("/groups/r"), None).await.status,
        404
    );
}

#[tokio::test]
async fn permissions_of_connections_on_other_nodes() {
    let cluster = TestCluster::start("perms", 3).await;
    let mut alice = cluster.node(0).json_client(HUB, None, &[], &[]).await;
    let mut listener = cluster.node(1).json_client(HUB, None, &[], &["g"]).await;
    let id = alice.connection_id().to_owned();
    let grpc = cluster.node(2).service_client().await;
    let grpc2 = cluster.node(1).service_client().await;

    alice
        .send(json!({"type":"sendToGroup","group":"g","ackId":1,"dataType":"text","data":"no"}))
        .await;
    alice.expect_ack_error(1, "Forbidden").await;
    assert!(
        !grpc2
            .check_permission(HUB, &id, Permission::SendToGroup, Some("g"))
            .await
            .expect("check")
    );
    grpc.grant_permission(HUB, &id, Permission::SendToGroup, Some("g"))
        .await
        .expect("grant");
    assert!(
        grpc2
            .check_permission(HUB, &id, Permission::SendToGroup, Some("g"))
            .await
            .expect("check")
    );
    alice.publish_text("g", "yes").await;
    assert_eq!(text(&listener.recv_message().await), "yes");
    grpc.revoke_permission(HUB, &id, Permission::SendToGroup, Some("g"))
        .await
        .expect("revoke");
    alice
        .send(json!({"type":"sendToGroup","group":"g","ackId":2,"dataType":"text","data":"no"}))
        .await;
    alice.expect_ack_error(2, "Forbidden").await;
    let err = grpc
        .grant_permission(HUB, "zzzzzzAAAAAAAAAAAAAAAA", Permission::SendToGroup, None)
        .await
        .expect_err("unknown connection");
    assert!(matches!(err, ServiceError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn closes_reach_connections_on_other_nodes() {
    let cluster = TestCluster::start("closes", 3).await;
    let n1 = cluster.node(0);
    let grpc = cluster.node(2).service_client().await;
    let a = n1.json_client(HUB, Some("a"), &[], &[]).await;
    let id = a.connection_id().to_owned();
    grpc.close_connection(HUB, &id, "bye a")
        .await
        .expect("close");
    let closed = a.expect_close().await;
    assert_eq!(closed.code, 1000);
    assert_eq!(closed.expect_disconnected(), "bye a");
    assert!(!grpc.connection_exists(HUB, &id).await.expect("exists"));

    let g1 = n1.json_client(HUB, Some("u1"), &[], &["g"]).await;
    let g2 = cluster
        .node(1)
        .json_client(HUB, Some("u2"), &[], &["g"])
        .await;
    let mut keep = n1.json_client(HUB, Some("keep"), &[], &["g"]).await;
    grpc.close_group_connections(
        HUB,
        "g",
        CloseOptions::new()
            .exclude(keep.connection_id())
            .reason("group"),
    )
    .await
    .expect("close group");
    for c in [g1, g2] {
        assert_eq!(c.expect_close().await.expect_disconnected(), "group");
    }
    keep.ping().await;

    let u1 = n1.json_client(HUB, Some("carol"), &[], &[]).await;
    let u2 = cluster
        .node(1)
        .json_client(HUB, Some("carol"), &[], &[])
        .await;
    let r = cluster
        .node(2)
        .rest()
        .call("POST", &path("/users/carol/:closeConnections"), None)
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    for c in [u1, u2] {
        assert_eq!(c.expect_close().await.code, 1000);
    }
    assert!(!grpc.user_exists(HUB, "carol").await.expect("exists"));

    grpc.close_all_connections(HUB, CloseOptions::new())
        .await
        .expect("close all");
    assert_eq!(keep.expect_close().await.code, 1000);
    assert_eq!(grpc.hub_stats(HUB).await.expect("stats").connections, 0);
}

#[tokio::test]
async fn cluster_wide_answers_merge_every_node() {
    let cluster = TestCluster::start("answers", 3).await;
    let (n1, n2, n3) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(
            n1.json_client(HUB, Some(&format!("u{i}")), &[], &["g"])
                .await,
        );
    }
    for i in 3..7 {
        clients.push(
            n2.json_client(HUB, Some(&format!("u{i}")), &[], &["g", "h"])
                .await,
        );
    }
    let grpc = n3.service_client().await;
    for c in &clients {
        assert!(
            grpc.connection_exists(HUB, c.connection_id())
                .await
                .expect("exists")
        );
        let info = grpc
            .get_connection(HUB, c.connection_id())
            .await
            .expect("get");
        assert_eq!(info.connection_id, c.connection_id());
    }
    assert!(grpc.user_exists(HUB, "u6").await.expect("exists"));
    assert!(!grpc.user_exists(HUB, "u9").await.expect("exists"));
    assert!(grpc.group_exists(HUB, "h").await.expect("exists"));
    assert!(!grpc.group_exists(HUB, "nope").await.expect("exists"));

    let stats = grpc.hub_stats(HUB).await.expect("stats");
    assert_eq!((stats.connections, stats.users, stats.groups), (9, 7, 2));

    // Paging over every node, in id order, without skips or repeats.
    let mut expected: Vec<String> = clients
        .iter()
        .map(|c| c.connection_id().to_owned())
        .collect();
    expected.sort();
    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let p = grpc
            .list_connections(HUB, None, "", page)
            .await
            .expect("list");
        assert!(p.items.len() <= 2);
        seen.extend(p.items.iter().map(|c| c.connection_id.clone()));
        match p.next(2) {
            Some(next) => page = next,
            None => break,
        }
    }
    assert_eq!(seen, expected);
    let filtered = grpc
        .list_connections(HUB, None, "userId eq 'u4'", PageRequest::first(100))
        .await
        .expect("filtered list");
    assert_eq!(filtered.items.len(), 2);
    let members = grpc
        .list_group_connections(HUB, "h", PageRequest::first(100))
        .await
        .expect("members");
    assert_eq!(members.items.len(), 4);
    let groups = grpc
        .list_groups(HUB, PageRequest::first(1))
        .await
        .expect("groups");
    assert_eq!(
        (
            groups.items[0].name.as_str(),
            groups.items[0].connection_count
        ),
        ("g", 9)
    );
    let rest_of = grpc
        .list_groups(HUB, groups.next(1).expect("a second page"))
        .await
        .expect("groups");
    assert_eq!(
        (
            rest_of.items[0].name.as_str(),
            rest_of.items[0].connection_count
        ),
        ("h", 4)
    );
    assert!(rest_of.next_page_token.is_none());

    // REST answers from node 3 too.
    let rest = n3.rest();
    let id = clients[0].connection_id();
    assert_eq!(
        rest.call("HEAD", &path(&format!("/connections/{id}")), None)
            .await
            .status,
        200
    );
    assert_eq!(
        rest.call("HEAD", &path("/users/u5"), None).await.status,
        200
    );
    let r = rest.call("GET", &path("/groups/h/connections"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["value"].as_array().map(Vec::len), Some(4));

    // A node that leaves gracefully leaves the answers at once.
    let mut nodes = cluster.nodes;
    nodes.remove(1).shutdown().await;
    let stats = grpc.hub_stats(HUB).await.expect("stats");
    assert_eq!((stats.connections, stats.users), (5, 5));
}

#[tokio::test]
async fn reliable_recovery_on_another_node_is_refused_with_1008() {
    let cluster = TestCluster::start("recovery", 2).await;
    let n1 = cluster.node(0);
    let url = n1.url(HUB, Some("r"), &[], &[]);
    let client = JsonClient::connect_as(&url, JSON_RELIABLE_SUBPROTOCOL).await;
    let id = client.connection_id().to_owned();
    let token = client.connected()["reconnectionToken"]
        .as_str()
        .expect("a reconnection token")
        .to_owned();
    client.abort();
    // The load balancer sends the reconnect to node 2, which does not hold the connection:
    // the client is told to start afresh (1008), never silently given a new empty session.
    let recover = cluster.node(1).ws_url(&format!(
        "/client/hubs/{HUB}?awps_connection_id={id}&awps_reconnection_token={}",
        hubcast_integration_tests::enc(&token)
    ));
    let again = JsonClient::connect_raw(&recover, JSON_RELIABLE_SUBPROTOCOL).await;
    let closed = again.expect_close().await;
    assert_eq!(closed.code, 1008, "{closed:?}");
}

#[tokio::test]
async fn a_killed_node_leaves_the_cluster_answers_within_its_lease() {
    let prefix = hubcast_integration_tests::cluster::unique_prefix("kill");
    let cluster = TestCluster::start_on(
        hubcast_integration_tests::cluster::REDIS_URL,
        &prefix,
        2,
        |_| {},
    )
    .await;
    let process = NodeProcess::start(
        hubcast_integration_tests::cluster::REDIS_URL,
        &prefix,
        TEST_LEASE,
    )
    .await;
    let doomed_a = JsonClient::connect(&process.url(HUB, Some("doomed"), &["g"])).await;
    let doomed_b = JsonClient::connect(&process.url(HUB, Some("doomed"), &[])).await;
    let mut survivor = cluster
        .node(1)
        .json_client(HUB, Some("s"), &[], &["g"])
        .await;
    let grpc = cluster.node(0).service_client().await;
    assert!(grpc.user_exists(HUB, "doomed").await.expect("exists"));
    assert!(
        grpc.connection_exists(HUB, doomed_a.connection_id())
            .await
            .expect("exists")
    );
    assert_eq!(grpc.hub_stats(HUB).await.expect("stats").connections, 3);

    process.kill().await;
    let killed_at = std::time::Instant::now();
    // Gone from every answer within the lease (a crashed process drops its Redis
    // connections, so usually at once); answers never fail meanwhile for more than that.
    loop {
        let gone = matches!(grpc.user_exists(HUB, "doomed").await, Ok(false))
            && matches!(grpc.hub_stats(HUB).await, Ok(s) if s.connections == 1)
            && matches!(
                grpc.connection_exists(HUB, doomed_b.connection_id()).await,
                Ok(false)
            );
        if gone {
            break;
        }
        assert!(
            killed_at.elapsed() < TEST_LEASE + std::time::Duration::from_secs(3),
            "the killed node's connections are still in the answers after its lease"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The others carry on.
    grpc.send_to_group(HUB, "g", "still here", SendOptions::new())
        .await
        .expect("send");
    assert_eq!(text(&survivor.recv_message().await), "still here");
    drop((doomed_a, doomed_b));
}

/// An event-stream listener on one node gets the events of connections on every node, and
/// answers them; when its node dies, the others stop relaying to it at once (a hub that
/// requires a listener refuses connections with 503, without waiting for a timeout).
#[tokio::test]
async fn a_listener_on_one_node_serves_every_node_until_its_node_dies() {
    use hubcast_proto::v1::{self as pb, events_client::EventsClient, listen_request};
    use hubcast_server::config::{EventStreamMode, HubConfig};

    let prefix = hubcast_integration_tests::cluster::unique_prefix("listen");
    let redis_url = hubcast_integration_tests::cluster::REDIS_URL;
    let cluster = TestCluster::start_on(redis_url, &prefix, 2, |c| {
        c.hubs.insert(
            "strict".into(),
            HubConfig {
                event_stream: EventStreamMode::Required,
                ..HubConfig::default()
            },
        );
    })
    .await;
    let process = NodeProcess::start(redis_url, &prefix, TEST_LEASE).await;

    // The backend dials the third node: it accepts every connect as user "from-listener".
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", process.grpc_addr()))
            .expect("valid endpoint")
            .connect()
            .await
            .expect("gRPC connect");
    let token = hubcast_integration_tests::sign_token(
        hubcast_integration_tests::PRIMARY_KEY,
        &json!({
            "exp": hubcast_integration_tests::unix_now() + 3600,
            "aud": format!("{}/hubcast.v1.Events", process.endpoint()),
        }),
    );
    let mut events_client =
        EventsClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            let bearer = format!("Bearer {token}").parse().expect("ascii");
            r.metadata_mut().insert("authorization", bearer);
            Ok(r)
        });
    let (replies, outbound) = tokio::sync::mpsc::channel(16);
    let subscription = pb::Subscription {
        hubs: vec!["strict".into()],
        user_event_pattern: String::new(),
        system_events: vec![
            pb::SystemEventKind::Connect as i32,
            pb::SystemEventKind::Connected as i32,
        ],
    };
    replies
        .send(pb::ListenRequest {
            request: Some(listen_request::Request::Subscription(subscription)),
        })
        .await
        .expect("queue the subscription");
    let mut events = events_client
        .listen(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
        .expect("Listen accepted")
        .into_inner();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(event)) = events.message().await {
            if event.reply_expected {
                let accept = pb::event_reply::Result::Connect(pb::ConnectResult {
                    user_id: Some("from-listener".into()),
                    ..Default::default()
                });
                let reply = pb::EventReply {
                    event_id: event.event_id,
                    result: Some(accept),
                    connection_state: None,
                };
                let _ = replies
                    .send(pb::ListenRequest {
                        request: Some(listen_request::Request::Reply(reply)),
                    })
                    .await;
            }
            let _ = seen_tx.send(event);
        }
    });

    // Clients of the two other nodes: accepted by that listener, which sees both events.
    for i in 0..2 {
        let client = JsonClient::connect(&cluster.node(i).url("strict", None, &[], &[])).await;
        assert_eq!(client.user_id(), Some("from-listener"), "node {i}");
        for kind in ["connect", "connected"] {
            let event = tokio::time::timeout(hubcast_integration_tests::TIMEOUT, seen.recv())
                .await
                .unwrap_or_else(|_| panic!("no {kind} event from node {i}"))
                .expect("listener running");
            assert_eq!(event.connection_id, client.connection_id(), "node {i}");
            let got = match event.kind {
                Some(pb::event::Kind::Connect(_)) => "connect",
                Some(pb::event::Kind::Connected(_)) => "connected",
                other => panic!("unexpected event {other:?}"),
            };
            assert_eq!(got, kind, "node {i}");
        }
    }

    // Killed: once Redis has dropped its subscription, the next connect is refused at once.
    process.kill().await;
    let mut redis = redis::Client::open(redis_url)
        .expect("Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let all = format!("{prefix}:all");
    assert_eventually!(
        {
            let counts: Vec<(String, usize)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&all)
                .query_async(&mut redis)
                .await
                .expect("PUBSUB NUMSUB");
            counts.first().is_some_and(|(_, n)| *n == 2)
        },
        "Redis still counts the killed node's subscription"
    );
    let started = std::time::Instant::now();
    let url = cluster.node(0).url("strict", None, &[], &[]);
    let status = hubcast_integration_tests::upgrade_status(hubcast_integration_tests::request(
        &url,
        &[],
        None,
    ))
    .await;
    assert_eq!(status, 503, "no listener left anywhere");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "the refusal waited {:?} for a dead node",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_hung_node_fails_answers_during_its_lease_then_drops_out_until_it_wakes() {
    let prefix = hubcast_integration_tests::cluster::unique_prefix("hang");
    let cluster = TestCluster::start_on(
        hubcast_integration_tests::cluster::REDIS_URL,
        &prefix,
        2,
        |_| {},
    )
    .await;
    // Longer than the answer timeout (5 s), so that answers fail while the lease runs.
    let lease = std::time::Duration::from_secs(12);
    let process = NodeProcess::start(
        hubcast_integration_tests::cluster::REDIS_URL,
        &prefix,
        lease,
    )
    .await;
    let frozen = JsonClient::connect(&process.url(HUB, Some("frozen"), &["g"])).await;
    let _other = cluster.node(1).json_client(HUB, Some("s"), &[], &[]).await;
    let grpc = cluster.node(0).service_client().await;
    assert_eq!(grpc.hub_stats(HUB).await.expect("stats").connections, 2);

    // Hung while its lease runs: the answer would be incomplete without it, so it is an
    // error, not a wrong number.
    process.pause();
    let paused = std::time::Instant::now();
    let (stats, exists) = tokio::join!(
        grpc.hub_stats(HUB),
        grpc.connection_exists(HUB, frozen.connection_id())
    );
    let err = stats.expect_err("a silent node with a current lease fails the answer");
    assert!(matches!(err, ServiceError::Unavailable(_)), "{err:?}");
    let err = exists.expect_err("its connection's owner does not answer");
    assert!(matches!(err, ServiceError::Unavailable(_)), "{err:?}");

    // Past its lease it no longer counts, though Redis still has it subscribed: the answers
    // leave it out, and do not wait for it.
    // (Plus a second: a renewal written just before the pause may reach Redis just after.)
    let lapsed = lease + std::time::Duration::from_secs(1);
    tokio::time::sleep(lapsed.saturating_sub(paused.elapsed())).await;
    let asked = std::time::Instant::now();
    assert_eq!(grpc.hub_stats(HUB).await.expect("stats").connections, 1);
    assert!(!grpc.user_exists(HUB, "frozen").await.expect("exists"));
    assert!(
        !grpc
            .connection_exists(HUB, frozen.connection_id())
            .await
            .expect("exists")
    );
    // Waiting for it would take the full answer timeout (5 s) for each of the three.
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(5),
        "answers waited {:?} for a node past its lease",
        asked.elapsed()
    );

    // Awake again, it renews its lease and is back in the answers with its connection.
    process.resume();
    let woke = std::time::Instant::now();
    loop {
        if matches!(grpc.hub_stats(HUB).await, Ok(s) if s.connections == 2)
            && matches!(grpc.user_exists(HUB, "frozen").await, Ok(true))
        {
            break;
        }
        assert!(
            woke.elapsed() < lease,
            "the node that woke up is not back in the answers"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(frozen);
}

/// A Redis that stalls for longer than a command may take (a publish times out) and then
/// answers again: the node is degraded meanwhile, and serving again as soon as Redis
/// answers, not at its next regular heartbeat (a third of the 30 s lease here, so 10 s).
/// A client's group send whose publish timed out is acked with an error, never `success`
/// (the other nodes may not have it), and a retry with the same ack id runs again.
#[tokio::test]
async fn a_stalled_redis_ends_the_degraded_period_as_soon_as_it_answers() {
    let redis = OwnRedis::start().await;
    let prefix = hubcast_integration_tests::cluster::unique_prefix("stall");
    let cluster = TestCluster::start_on(&redis.url(), &prefix, 2, |c| {
        c.cluster.lease = std::time::Duration::from_secs(30);
    })
    .await;
    let (n1, n2) = (cluster.node(0), cluster.node(1));
    let mut member = n1.json_client(HUB, None, &[], &["g"]).await;
    let mut sender = n2.json_client(HUB, None, &[SEND_ROLE], &[]).await;
    sender.publish_text("g", "before").await;
    assert_eq!(text(&member.recv_message().await), "before");

    redis.pause();
    let during = json!({
        "type": "sendToGroup", "group": "g", "ackId": 1000,
        "dataType": "text", "data": "during",
    });
    sender.send(during.clone()).await;
    // Queued while the node was still healthy: the ack waits for Redis, which times out.
    let ack = sender.expect_ack_error(1000, "InternalServerError").await;
    assert!(
        ack["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("other nodes")),
        "{ack}"
    );
    assert_eventually!(
        n2.cluster_degraded(),
        "a publish that timed out degrades the node"
    );
    redis.resume();
    let resumed = std::time::Instant::now();
    assert_eventually!(!n2.cluster_degraded(), "serving again once Redis answers");
    assert!(
        resumed.elapsed() < std::time::Duration::from_secs(5),
        "degraded for {:?} after Redis answered again",
        resumed.elapsed()
    );
    wait_health(n2, ServingStatus::Serving).await;
    // The failed send is not remembered as processed: its retry runs (no `Duplicate`).
    sender.send(during).await;
    sender.expect_ack_ok(1000).await;
    sender.publish_text("g", "after").await;
    // The timed-out publish may still have reached Redis when it woke, so "during" arrives
    // once or twice; it arrives before "after" either way.
    member.recv_where(|m| m["data"] == "during").await;
    member.recv_where(|m| m["data"] == "after").await;
}

async fn health(server: &TestServer) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr()))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status()
}

/// Waits until the gRPC health of `server` reports `status` (it follows the backplane).
async fn wait_health(server: &TestServer, status: ServingStatus) {
    let deadline = std::time::Instant::now() + hubcast_integration_tests::TIMEOUT;
    while health(server).await != status {
        assert!(
            std::time::Instant::now() < deadline,
            "gRPC health never became {status:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_redis_restart_is_survived_without_restarting_hubcast() {
    let mut redis = OwnRedis::start().await;
    let prefix = hubcast_integration_tests::cluster::unique_prefix("restart");
    let cluster = TestCluster::start_on(&redis.url(), &prefix, 2, |_| {}).await;
    let (n1, n2) = (cluster.node(0), cluster.node(1));
    let mut member = n1.json_client(HUB, None, &[], &["g"]).await;
    let mut local_sender = n1.json_client(HUB, None, &[SEND_ROLE], &[]).await;
    let mut remote_sender = n2.json_client(HUB, None, &[SEND_ROLE], &[]).await;
    remote_sender.publish_text("g", "before").await;
    assert_eq!(text(&member.recv_message().await), "before");
    wait_health(n1, ServingStatus::Serving).await;

    redis.stop().await;
    assert_eventually!(n1.cluster_degraded() && n2.cluster_degraded());
    wait_health(n1, ServingStatus::NotServing).await;
    wait_health(n2, ServingStatus::NotServing).await;
    let metrics = n1.router().nodes()[0]
        .cluster()
        .expect("clustered")
        .metrics();
    assert!(metrics.degraded && metrics.errors > 0, "{metrics:?}");
    let node = n1.router().nodes()[0]
        .cluster()
        .expect("clustered")
        .node()
        .to_owned();
    let exported = n1
        .rest()
        .call_with("GET", "/metrics", None, None, &[])
        .await;
    let body = String::from_utf8_lossy(&exported.body).into_owned();
    assert!(
        body.contains(&format!("hubcast_cluster_degraded{{node=\"{node}\"}} 1")),
        "/metrics reports the degraded period: {body}"
    );

    // Local clients are still served; the sender is told the other nodes may miss it.
    local_sender
        .send(json!({"type":"sendToGroup","group":"g","ackId":1,"dataType":"text","data":"local"}))
        .await;
    let ack = local_sender
        .expect_ack_error(1, "InternalServerError")
        .await;
    assert!(
        ack["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cluster"),
        "{ack}"
    );
    assert_eq!(text(&member.recv_message().await), "local");
    // Cluster operations fail clearly instead of pretending.
    let grpc = n2.service_client().await;
    let err = grpc
        .send_to_group(HUB, "g", "lost?", SendOptions::new())
        .await
        .expect_err("no Redis");
    assert!(matches!(err, ServiceError::Unavailable(_)), "{err:?}");
    let err = grpc.hub_stats(HUB).await.expect_err("no Redis");
    assert!(matches!(err, ServiceError::Unavailable(_)), "{err:?}");
    let r = n2.rest().call("HEAD", &path("/groups/g"), None).await;
    assert_eq!(r.status, 503, "{r:?}");

    redis.restart().await;
    cluster.wait_healthy().await;
    wait_health(n1, ServingStatus::Serving).await;
    let exported = n1
        .rest()
        .call_with("GET", "/metrics", None, None, &[])
        .await;
    let body = String::from_utf8_lossy(&exported.body).into_owned();
    assert!(
        body.contains(&format!("hubcast_cluster_degraded{{node=\"{node}\"}} 0")),
        "{body}"
    );
    remote_sender.publish_text("g", "after").await;
    assert_eq!(text(&member.recv_message().await), "after");
    assert!(grpc.group_exists(HUB, "g").await.expect("exists"));
}
