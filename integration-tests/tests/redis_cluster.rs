//! Three Hubcast nodes on a real Redis Cluster of the test's own (three masters): clients on
//! node 1, a sender on node 2, control calls on node 3. The backplane's keys and channels
//! share one hash slot, every node subscribes through that slot's master, messaging and
//! control work across nodes as on one Redis, a restart of that master is survived without
//! restarting Hubcast, and a configuration naming both kinds of Redis is refused at start.

use std::process::Stdio;
use std::time::Duration;

use hubcast_integration_tests::cluster::{
    OwnRedisCluster, TestCluster, hubcast_bin, unique_prefix,
};
use hubcast_integration_tests::{PRIMARY_KEY, SEND_ROLE, TestServer, assert_eventually};
use hubcast_sdk::{PageRequest, SendOptions, ServiceError};
use serde_json::{Value, json};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const HUB: &str = "chat";

fn text(m: &Value) -> &str {
    m["data"]
        .as_str()
        .unwrap_or_else(|| panic!("text data: {m}"))
}

async fn health(server: &TestServer) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr()))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status()
}

/// Waits until the gRPC health of `server` reports `status` (it follows the backplane).
async fn wait_health(server: &TestServer, status: ServingStatus, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    while health(server).await != status {
        assert!(
            std::time::Instant::now() < deadline,
            "gRPC health never became {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Redis Cluster node every Hubcast node subscribes through: the master of the
/// backplane's slot, where `PUBLISH` runs, so that its receiver count covers every node.
async fn subscribed_through(redis: &OwnRedisCluster, prefix: &str, nodes: i64) -> usize {
    let channel = format!("{{{prefix}}}:all");
    let master = redis.master_of(&channel).await;
    for i in 0..redis.len() {
        let expected = if i == master { nodes } else { 0 };
        assert_eq!(
            redis.subscribers_on(i, &channel).await,
            expected,
            "subscribers of {channel} on Redis node {i} (the slot's master is {master})"
        );
    }
    master
}

#[tokio::test]
async fn messaging_and_control_across_nodes_on_a_redis_cluster() {
    let redis = OwnRedisCluster::start().await;
    let prefix = unique_prefix("rcluster");
    let cluster = TestCluster::start_on_redis_cluster(&redis.seeds(), &prefix, 3).await;
    let (n1, n2, n3) = (cluster.node(0), cluster.node(1), cluster.node(2));

    // Every key is under the hash tag, so all live on the master of one slot, which is
    // also where every node subscribes.
    let master = subscribed_through(&redis, &prefix, 3).await;
    let mut conn = redis.node_connection(master).await;
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{{{prefix}}}:nodes"))
        .query_async(&mut conn)
        .await
        .expect("SMEMBERS on the slot's master");
    assert_eq!(members.len(), 3, "{members:?}");
    for node in &members {
        let lease: Option<String> = redis::cmd("GET")
            .arg(format!("{{{prefix}}}:lease:{node}"))
            .query_async(&mut conn)
            .await
            .expect("GET on the slot's master");
        assert!(lease.is_some(), "lease of {node}");
    }

    let mut alice = n1.json_client(HUB, Some("alice"), &[], &["g"]).await;
    let mut bob = n1.json_client(HUB, Some("bob"), &[], &[]).await;
    let mut sam = n2.json_client(HUB, Some("sam"), &[SEND_ROLE], &[]).await;
    let grpc = n3.service_client().await;

    // A client's group send from node 2 reaches the member on node 1.
    sam.publish_text("g", "from node 2").await;
    assert_eq!(
        alice.recv_message().await,
        json!({"type":"message","from":"group","fromUserId":"sam","group":"g",
               "dataType":"text","data":"from node 2"})
    );
    // Service sends from node 3: to the group, and to one connection (routed to node 1).
    grpc.send_to_group(HUB, "g", "group", SendOptions::new())
        .await
        .expect("send to group");
    assert_eq!(text(&alice.recv_message().await), "group");
    grpc.send_to_connection(HUB, bob.connection_id(), "direct", SendOptions::new())
        .await
        .expect("send to connection");
    assert_eq!(text(&bob.recv_message().await), "direct");

    // Adding a connection of node 1 to a group, from node 3.
    grpc.add_connection_to_group(HUB, "h", bob.connection_id())
        .await
        .expect("add to group");
    sam.publish_text("h", "to h").await;
    assert_eq!(text(&bob.recv_message().await), "to h");
    let err = grpc
        .add_connection_to_group(HUB, "h", "zzzzzzAAAAAAAAAAAAAAAA")
        .await
        .expect_err("a connection of no node");
    assert!(matches!(err, ServiceError::NotFound(_)), "{err:?}");

    // Questions answered by the owner node, and by every node.
    assert!(
        grpc.connection_exists(HUB, alice.connection_id())
            .await
            .expect("exists")
    );
    assert!(grpc.user_exists(HUB, "sam").await.expect("exists"));
    assert!(!grpc.user_exists(HUB, "nobody").await.expect("exists"));
    assert!(grpc.group_exists(HUB, "h").await.expect("exists"));
    assert!(!grpc.group_exists(HUB, "none").await.expect("exists"));
    let listed = grpc
        .list_connections(HUB, None, "", PageRequest::first(100))
        .await
        .expect("list");
    let mut ids: Vec<String> = listed.items.into_iter().map(|c| c.connection_id).collect();
    ids.sort();
    let mut expected = vec![
        alice.connection_id().to_owned(),
        bob.connection_id().to_owned(),
        sam.connection_id().to_owned(),
    ];
    expected.sort();
    assert_eq!(ids, expected);
    let members = grpc
        .list_group_connections(HUB, "g", PageRequest::first(100))
        .await
        .expect("members");
    assert_eq!(members.items.len(), 1);
    let stats = grpc.hub_stats(HUB).await.expect("stats");
    assert_eq!((stats.connections, stats.users, stats.groups), (3, 3, 2));
}

#[tokio::test]
async fn a_restart_of_the_redis_cluster_master_of_the_backplane_slot_is_survived() {
    let mut redis = OwnRedisCluster::start().await;
    let prefix = unique_prefix("rcluster-restart");
    let cluster = TestCluster::start_on_redis_cluster(&redis.seeds(), &prefix, 3).await;
    let (n1, n2, n3) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let mut member = n1.json_client(HUB, None, &[], &["g"]).await;
    let mut sender = n2.json_client(HUB, None, &[SEND_ROLE], &[]).await;
    sender.publish_text("g", "before").await;
    assert_eq!(text(&member.recv_message().await), "before");
    let master = subscribed_through(&redis, &prefix, 3).await;
    wait_health(
        n1,
        ServingStatus::Serving,
        hubcast_integration_tests::TIMEOUT,
    )
    .await;

    redis.stop(master).await;
    assert_eventually!(
        n1.cluster_degraded() && n2.cluster_degraded() && n3.cluster_degraded(),
        "every node reports the lost Redis Cluster master"
    );
    wait_health(
        n1,
        ServingStatus::NotServing,
        hubcast_integration_tests::TIMEOUT,
    )
    .await;
    let metrics = n1.router().nodes()[0]
        .cluster()
        .expect("clustered")
        .metrics();
    assert!(metrics.degraded && metrics.errors > 0, "{metrics:?}");
    // Cluster operations fail clearly meanwhile.
    let grpc = n3.service_client().await;
    let err = grpc
        .send_to_group(HUB, "g", "lost?", SendOptions::new())
        .await
        .expect_err("the slot's master is down");
    assert!(matches!(err, ServiceError::Unavailable(_)), "{err:?}");
    let err = grpc
        .hub_stats(HUB)
        .await
        .expect_err("the slot's master is down");
    assert!(matches!(err, ServiceError::Unavailable(_)), "{err:?}");

    let subscriptions_before = n1.router().nodes()[0]
        .cluster()
        .expect("clustered")
        .metrics()
        .subscriptions;
    redis.restart(master).await;
    redis.wait_ok().await;
    // Back without restarting Hubcast: resubscribed (through the same master, which got
    // its slots back) and serving again.
    let within = hubcast_integration_tests::TIMEOUT * 4;
    for node in &cluster.nodes {
        wait_health(node, ServingStatus::Serving, within).await;
    }
    assert!(
        n1.router().nodes()[0]
            .cluster()
            .expect("clustered")
            .metrics()
            .subscriptions
            > subscriptions_before
    );
    subscribed_through(&redis, &prefix, 3).await;
    sender.publish_text("g", "after").await;
    assert_eq!(text(&member.recv_message().await), "after");
    grpc.send_to_connection(HUB, member.connection_id(), "routed", SendOptions::new())
        .await
        .expect("send to connection");
    assert_eq!(text(&member.recv_message().await), "routed");
    assert_eq!(grpc.hub_stats(HUB).await.expect("stats").connections, 2);
}

#[tokio::test]
async fn a_moved_backplane_slot_is_followed_by_commands_and_subscriptions() {
    let redis = OwnRedisCluster::start().await;
    let prefix = unique_prefix("rcluster-move");
    let cluster = TestCluster::start_on_redis_cluster(&redis.seeds(), &prefix, 3).await;
    let (n1, n2, n3) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let mut member = n1.json_client(HUB, Some("m"), &[], &["g"]).await;
    let mut sender = n2.json_client(HUB, Some("s"), &[SEND_ROLE], &[]).await;
    let from = subscribed_through(&redis, &prefix, 3).await;
    let to = (from + 1) % redis.len();

    // Resharding: the slot and its keys (leases, node set) move to another master.
    let channel = format!("{{{prefix}}}:all");
    redis.move_slot(&channel, to).await;
    // Every node notices within a check (a third of the lease) and resubscribes there, so
    // `PUBLISH` counts every node again.
    assert_eventually!(
        redis.subscribers_on(to, &channel).await == 3
            && redis.subscribers_on(from, &channel).await == 0,
        "the nodes did not resubscribe through the slot's new master"
    );
    cluster.wait_healthy().await;
    // Commands follow the slot: the leases are renewed on the new master.
    let mut conn = redis.node_connection(to).await;
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{{{prefix}}}:nodes"))
        .query_async(&mut conn)
        .await
        .expect("SMEMBERS on the new master");
    assert_eq!(members.len(), 3, "{members:?}");

    sender.publish_text("g", "after the move").await;
    assert_eq!(text(&member.recv_message().await), "after the move");
    let grpc = n3.service_client().await;
    grpc.send_to_connection(HUB, member.connection_id(), "routed", SendOptions::new())
        .await
        .expect("send to connection");
    assert_eq!(text(&member.recv_message().await), "routed");
    assert!(
        grpc.connection_exists(HUB, sender.connection_id())
            .await
            .expect("exists")
    );
    let stats = grpc.hub_stats(HUB).await.expect("stats");
    assert_eq!((stats.connections, stats.users, stats.groups), (2, 2, 1));
}

/// Runs the binary with `args` and `env`; returns its exit code and stderr.
async fn run_hubcast(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = tokio::process::Command::new(hubcast_bin());
    command
        .args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
        .args(["--access-key", PRIMARY_KEY])
        .args(args)
        .env_remove("HUBCAST_REDIS_URL")
        .env_remove("HUBCAST_REDIS_CLUSTER_NODES")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(hubcast_integration_tests::TIMEOUT, command.output())
        .await
        .expect("hubcast must refuse the configuration at once, not start")
        .expect("run hubcast");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_redis_url_and_redis_cluster_nodes_together_are_refused_at_start() {
    // Nothing listens on these ports: the refusal must come before any connection attempt.
    let flags = run_hubcast(
        &[
            "--redis",
            "redis://127.0.0.1:1",
            "--redis-cluster-node",
            "redis://127.0.0.1:2",
        ],
        &[],
    )
    .await;
    let env = run_hubcast(
        &["--redis", "redis://127.0.0.1:1"],
        &[(
            "HUBCAST_REDIS_CLUSTER_NODES",
            "redis://127.0.0.1:2,redis://127.0.0.1:3",
        )],
    )
    .await;
    for (code, stderr) in [flags, env] {
        assert_eq!(code, Some(64), "exit code (EX_USAGE); stderr: {stderr}");
        assert!(
            stderr.contains("mutually exclusive") && stderr.contains("--redis-cluster-node"),
            "{stderr}"
        );
    }
}
