//! The operator commands of the `hubcast` binary against a running server: `stats`,
//! `connections`, `groups`, `send`, `close` and `trace`, in text and `--json`, and their
//! errors (a wrong key, an unreachable server).

use std::process::{Output, Stdio};

use hubcast_integration_tests::cluster::hubcast_bin;
use hubcast_integration_tests::{JOIN_ROLE, SEND_ROLE, TIMEOUT, TestServer};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

const HUB: &str = "ops";

fn command(server: &TestServer, args: &[&str]) -> Command {
    let mut command = Command::new(hubcast_bin());
    command
        .args(args)
        .arg("--grpc-url")
        .arg(format!("http://{}", server.grpc_addr()))
        .arg("--connection-string")
        .arg(server.connection_string())
        .env_remove("HUBCAST_ACCESS_KEYS")
        .kill_on_drop(true);
    command
}

async fn run(server: &TestServer, args: &[&str]) -> Output {
    let output = tokio::time::timeout(TIMEOUT, command(server, args).output())
        .await
        .expect("the command ends in time")
        .expect("run hubcast");
    assert!(output.status.success(), "hubcast {args:?}: {output:?}");
    output
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[tokio::test]
async fn operators_list_send_close_and_follow_the_trace() {
    let server = TestServer::start().await;
    let mut alice = server
        .json_client(HUB, Some("alice"), &[JOIN_ROLE, SEND_ROLE], &["g"])
        .await;
    let bob = server.json_client(HUB, Some("bob"), &[], &[]).await;
    let (alice_id, bob_id) = (
        alice.connection_id().to_owned(),
        bob.connection_id().to_owned(),
    );

    let stats = json_lines(&run(&server, &["stats", "--hub", HUB, "--json"]).await);
    assert_eq!(stats[0]["connections"], 2, "{stats:?}");
    assert_eq!(stats[0]["groups"], 1, "{stats:?}");
    let text = run(&server, &["stats", "--hub", HUB]).await;
    assert_eq!(
        String::from_utf8_lossy(&text.stdout).trim(),
        format!("hub {HUB}: 2 connections, 2 users, 1 groups")
    );

    let listed = json_lines(&run(&server, &["connections", "--hub", HUB, "--json"]).await);
    let mut ids: Vec<&str> = listed
        .iter()
        .map(|c| c["connectionId"].as_str().expect("id"))
        .collect();
    ids.sort_unstable();
    let mut want = vec![alice_id.as_str(), bob_id.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    let alice_row = listed
        .iter()
        .find(|c| c["connectionId"] == alice_id.as_str())
        .expect("alice");
    assert_eq!(alice_row["userId"], "alice");
    assert_eq!(alice_row["groups"], serde_json::json!(["g"]));
    let members = json_lines(
        &run(
            &server,
            &["connections", "--hub", HUB, "--group", "g", "--json"],
        )
        .await,
    );
    assert_eq!(
        members,
        vec![serde_json::json!({ "connectionId": alice_id })]
    );
    let groups = json_lines(&run(&server, &["groups", "--hub", HUB, "--json"]).await);
    assert_eq!(
        groups,
        vec![serde_json::json!({ "group": "g", "connections": 1 })]
    );

    // Follow the trace while a newcomer connects.
    let mut follower = command(
        &server,
        &[
            "trace",
            "--hub",
            HUB,
            "--category",
            "connectivity",
            "--json",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start hubcast trace");
    let mut stderr = BufReader::new(follower.stderr.take().expect("stderr")).lines();
    let banner = tokio::time::timeout(TIMEOUT, stderr.next_line())
        .await
        .expect("the trace starts in time")
        .expect("read")
        .expect("a banner line");
    assert!(banner.contains("following the live trace"), "{banner}");
    let carol = server.json_client(HUB, Some("carol"), &[], &[]).await;
    let mut lines = BufReader::new(follower.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(TIMEOUT, lines.next_line())
        .await
        .expect("a record in time")
        .expect("read")
        .expect("a line");
    let record: Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(record["eventName"], "ConnectionStarted", "{record}");
    assert_eq!(record["connectionId"], carol.connection_id());
    assert_eq!(record["category"], "connectivity");
    follower.kill().await.expect("stop the trace");

    let sent = run(
        &server,
        &["send", "--hub", HUB, "--group", "g", "from the operator"],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&sent.stdout).trim(),
        format!("sent to group 'g' of hub {HUB}")
    );
    assert_eq!(alice.recv_message().await["data"], "from the operator");

    let closed = json_lines(
        &run(
            &server,
            &[
                "close",
                "--hub",
                HUB,
                "--connection",
                &bob_id,
                "--reason",
                "bye",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(closed[0]["closed"], true);
    bob.expect_close().await;
    carol.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_wrong_key_or_an_unreachable_server_is_a_clear_failure() {
    let server = TestServer::start().await;
    let wrong = Command::new(hubcast_bin())
        .args([
            "stats",
            "--hub",
            HUB,
            "--grpc-url",
            &format!("http://{}", server.grpc_addr()),
        ])
        .arg("--connection-string")
        .arg(format!(
            "Endpoint={};AccessKey=not-the-servers-key-0123456789abcdef;Version=1.0;",
            server.endpoint()
        ))
        .output()
        .await
        .expect("run hubcast");
    assert_eq!(wrong.status.code(), Some(1), "{wrong:?}");
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("Unauthenticated"),
        "{wrong:?}"
    );

    let addr = server.grpc_addr();
    server.shutdown().await;
    let gone = Command::new(hubcast_bin())
        .args([
            "groups",
            "--hub",
            HUB,
            "--grpc-url",
            &format!("http://{addr}"),
        ])
        .args([
            "--connection-string",
            "Endpoint=http://127.0.0.1:1;AccessKey=k0123456789abcdef0123456789abcdef;Version=1.0;",
        ])
        .output()
        .await
        .expect("run hubcast");
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("cannot reach"),
        "{gone:?}"
    );
}
