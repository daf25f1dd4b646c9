//! The Rust SDK's WebSocket client (`hubcast-sdk`) against a real server, over real sockets,
//! through a proxy that cuts connections abruptly: recovery without loss or duplicates (JSON
//! and protobuf), acks answered `Duplicate` on retries, rejoin after a connection that cannot
//! be recovered, typed payloads and events, stop.

use std::convert::Infallible;
use std::future::IntoFuture as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hubcast_integration_tests::proxy::Proxy;
use hubcast_integration_tests::{JOIN_ROLE, SEND_ROLE, TIMEOUT, TestServer, assert_eventually};
use hubcast_sdk::{
    Any, Builder, Client, Connected, Disconnected, Event, Events, GroupMessage, Payload, Protocol,
    RejoinGroupFailed, State,
};
use hubcast_server::message::{Data, Message};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

const HUB: &str = "sdk";

/// Short delays so that recoveries and reconnections happen at test speed.
fn fast(builder: Builder) -> Builder {
    builder
        .with_recovery_retry_delay(Duration::from_millis(50))
        .with_reconnect_delay(Duration::from_millis(100))
        .with_connect_timeout(TIMEOUT)
}

async fn connect(url: String, protocol: Protocol) -> (Client, Events) {
    tokio::time::timeout(
        TIMEOUT,
        fast(Client::builder(url)).with_protocol(protocol).connect(),
    )
    .await
    .expect("connect timed out")
    .expect("connect failed")
}

async fn next_event(events: &mut Events) -> Event {
    tokio::time::timeout(TIMEOUT, events.recv())
        .await
        .unwrap_or_else(|_| panic!("no event within {TIMEOUT:?}"))
        .expect("the event stream ended")
}

async fn expect_connected(events: &mut Events) -> Connected {
    match next_event(events).await {
        Event::Connected(c) => c,
        other => panic!("expected Connected, got {other:?}"),
    }
}

async fn expect_group_message(events: &mut Events) -> GroupMessage {
    match next_event(events).await {
        Event::GroupMessage(m) => m,
        other => panic!("expected a group message, got {other:?}"),
    }
}

/// Awaits a request of the SDK, within [`TIMEOUT`].
async fn acked<F: std::future::IntoFuture>(request: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, request.into_future())
        .await
        .unwrap_or_else(|_| panic!("no ack within {TIMEOUT:?}"))
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Numbered {
    n: u64,
}

/// A reader behind the proxy receives a stream of group messages, published straight to the
/// server, while the proxy cuts its connection again and again. Every message must arrive
/// exactly once and in order, on one connection id, with no lifecycle event.
async fn stream_survives_cuts(protocol: Protocol) {
    const N: u64 = 1500;
    const CUTS: u64 = 12;
    // The publisher stays at most this far ahead of the reader, so the server's buffer of
    // unacknowledged messages (1000) never overflows while the reader is cut off.
    const WINDOW: u64 = 200;
    // Messages held back in the proxy before every other cut.
    const HELD: u64 = 25;

    let server = TestServer::start_with(|c| {
        // The publisher sends as fast as acks come back, the reader acks every message: the
        // per-connection rate limit is not what this test is about.
        c.limits.messages_per_second = 100_000;
    })
    .await;
    let proxy = Proxy::start(server.client_addr()).await;
    let url = server.url_through(&proxy, HUB, Some("reader"), &[JOIN_ROLE], &[]);
    let (client, mut events) = connect(url, protocol).await;
    let first = expect_connected(&mut events).await;
    acked(client.join_group("stream")).await.expect("join");

    let (progress_tx, mut progress) = watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut received = Vec::with_capacity(N as usize);
        let mut unexpected = Vec::new();
        while (received.len() as u64) < N {
            match events.recv().await {
                Some(Event::GroupMessage(m)) => {
                    let n = m.payload.to_json::<Numbered>().expect("typed JSON").n;
                    assert_eq!(m.group, "stream");
                    // One connection, so one gapless sequence from 1.
                    assert_eq!(m.sequence_id, Some(received.len() as u64 + 1), "n = {n}");
                    received.push(n);
                    progress_tx.send_replace(received.len() as u64);
                }
                Some(other) => unexpected.push(format!("{other:?}")),
                None => break,
            }
        }
        (received, unexpected, events)
    });

    let mut publisher = server
        .json_client(HUB, Some("writer"), &[SEND_ROLE], &[])
        .await;
    let step = N / (CUTS + 1);
    let mut cut_at = None;
    for i in 0..N {
        if i > 0 && i.is_multiple_of(step) && i / step <= CUTS {
            if (i / step).is_multiple_of(2) {
                // Let messages pile up in the proxy first: the cut loses them in transit,
                // so only the server's resend can deliver them.
                proxy.hold_downstream(true);
                cut_at = Some(i + HELD);
            } else {
                cut_at = Some(i);
            }
        }
        if cut_at == Some(i) {
            proxy.wait_for_open(1).await;
            let cut = proxy.cut_all().await;
            assert!(cut >= 1, "cut at {i}: no connection to cut");
            proxy.hold_downstream(false);
            cut_at = None;
        }
        let behind = i.saturating_sub(WINDOW);
        let waited = tokio::time::timeout(TIMEOUT, progress.wait_for(|&r| r >= behind))
            .await
            .map(|r| r.is_ok());
        match waited {
            Ok(true) => {}
            Ok(false) => panic!("the reader task ended early"),
            Err(_) => panic!("reader stuck at {} of {i} published", *progress.borrow()),
        }
        publisher
            .send(json!({
                "type": "sendToGroup", "group": "stream", "ackId": i + 1,
                "dataType": "json", "data": {"n": i},
            }))
            .await;
        publisher.expect_ack_ok(i + 1).await;
    }

    let (received, unexpected, _events) = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the reader did not receive every message within 60 s")
        .expect("reader task");
    assert_eq!(received.len() as u64, N, "messages received");
    let out_of_place = received.iter().enumerate().find(|(i, n)| *i as u64 != **n);
    assert_eq!(out_of_place, None, "first message out of place (index, n)");
    assert!(
        unexpected.is_empty(),
        "no lifecycle event expected: {unexpected:?}"
    );
    assert!(
        proxy.cuts() >= 10,
        "only {} connections were cut",
        proxy.cuts()
    );
    assert!(
        proxy.accepted() > proxy.cuts(),
        "every cut was followed by a new proxied connection"
    );
    assert_eq!(client.connection_id(), Some(first.connection_id.clone()));
    assert_eq!(client.state(), State::Connected);
    // Sequence acks flow: the server ends up holding nothing unacknowledged.
    let conn = server
        .router()
        .connection(HUB, &first.connection_id)
        .expect("the connection is still registered");
    assert_eventually!(
        conn.outbox().unacknowledged().0 == 0,
        "unacknowledged messages left: {:?}",
        conn.outbox().unacknowledged()
    );
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_json_stream_survives_ten_cuts_exactly_once_in_order() {
    stream_survives_cuts(Protocol::JsonReliable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_protobuf_stream_survives_ten_cuts_exactly_once_in_order() {
    stream_survives_cuts(Protocol::ProtobufReliable).await;
}

/// The service carries out a request but its ack is lost with the socket: after the
/// recovery the client sends the request again with the same ack id, and the service answers
/// `Duplicate` instead of publishing (or joining) twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_retried_after_a_cut_are_answered_duplicate_and_take_effect_once() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.client_addr()).await;
    let url = server.url_through(&proxy, HUB, Some("sender"), &[JOIN_ROLE, SEND_ROLE], &[]);
    let (client, mut events) = connect(url, Protocol::JsonReliable).await;
    let first = expect_connected(&mut events).await;
    let mut observer = server
        .json_client(HUB, Some("observer"), &[JOIN_ROLE], &[])
        .await;
    observer.join("dup").await;

    // Publish: the observer sees it, so the service did it; its ack is held in the proxy.
    proxy.hold_downstream(true);
    let send = client.send_to_group("dup", "once").into_future();
    let seen = observer.recv_message().await;
    assert_eq!(seen["data"], "once", "{seen}");
    assert_eq!(proxy.cut_all().await, 1);
    proxy.hold_downstream(false);
    let ack = acked(send).await.expect("the retried send succeeds");
    assert!(
        ack.is_duplicate(),
        "the retry was answered Duplicate: {ack:?}"
    );
    assert!(ack.ack_id().is_some());
    observer.expect_nothing_queued().await;

    // Join: the group exists on the server, the ack is lost, the retry is a Duplicate.
    proxy.hold_downstream(true);
    let join = client.join_group("joined-once").into_future();
    assert_eventually!(server.router().group_exists(HUB, "joined-once"));
    assert_eq!(proxy.cut_all().await, 1);
    proxy.hold_downstream(false);
    let ack = acked(join).await.expect("the retried join succeeds");
    assert!(ack.is_duplicate(), "{ack:?}");

    // Still the same connection, and it works.
    assert_eq!(client.connection_id(), Some(first.connection_id));
    let ack = acked(client.send_to_group("dup", "twice"))
        .await
        .expect("send");
    assert!(!ack.is_duplicate());
    let seen = observer.recv_message().await;
    assert_eq!(seen["data"], "twice", "{seen}");
    observer.expect_nothing_queued().await;
    client.stop().await;
}

/// An ack that never comes: the client sends the request again (same ack id) after each
/// ack timeout, then fails with a timeout; the service published it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_requests_are_retried_with_the_same_ack_id_then_time_out() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.client_addr()).await;
    let url = server.url_through(&proxy, HUB, Some("sender"), &[SEND_ROLE], &[]);
    let (client, mut events) = tokio::time::timeout(
        TIMEOUT,
        fast(Client::builder(url))
            .with_ack_timeout(Duration::from_millis(100))
            .with_max_retries(2)
            .connect(),
    )
    .await
    .expect("connect timed out")
    .expect("connect");
    expect_connected(&mut events).await;
    let mut observer = server
        .json_client(HUB, Some("observer"), &[JOIN_ROLE], &[])
        .await;
    observer.join("slow").await;

    proxy.hold_downstream(true);
    let error = acked(client.send_to_group("slow", "m"))
        .await
        .expect_err("no ack can arrive");
    assert!(error.is_timeout(), "{error:?}");
    let seen = observer.recv_message().await;
    assert_eq!(seen["data"], "m", "{seen}");
    // Three sends with one ack id: published once.
    observer.expect_nothing_queued().await;

    // The held acks arrive late and are ignored; the client goes on.
    proxy.hold_downstream(false);
    acked(client.send_to_group("slow", "next"))
        .await
        .expect("send after the timeout");
    let seen = observer.recv_message().await;
    assert_eq!(seen["data"], "next", "{seen}");
    client.stop().await;
}

/// The connection cannot be recovered (the client stayed away longer than the server's
/// recovery window): the recovery is refused with 1008, the client reports `Disconnected`,
/// asks its URL provider for a new URL, connects anew (new connection id) and rejoins its
/// groups; the group its new token no longer allows is reported as a failed rejoin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrecoverable_drop_reconnects_with_a_fresh_url_and_rejoins_groups() {
    let server = TestServer::start_with(|config| {
        config.client.recovery_window = Duration::from_millis(300);
    })
    .await;
    let proxy = Proxy::start(server.client_addr()).await;
    let roles_first = [
        "webpubsub.joinLeaveGroup.room",
        "webpubsub.joinLeaveGroup.vip",
    ];
    let roles_later = ["webpubsub.joinLeaveGroup.room"];
    let urls = [
        server.url_through(&proxy, HUB, Some("carol"), &roles_first, &[]),
        server.url_through(&proxy, HUB, Some("carol"), &roles_later, &[]),
    ];
    let calls = Arc::new(AtomicUsize::new(0));
    let provider_calls = calls.clone();
    let provider = move || {
        let call = provider_calls.fetch_add(1, Ordering::SeqCst);
        let url = urls[call.min(1)].clone();
        async move { Ok::<_, Infallible>(url) }
    };
    let (client, mut events) = tokio::time::timeout(
        TIMEOUT,
        fast(Client::builder_with_url_provider(provider)).connect(),
    )
    .await
    .expect("connect timed out")
    .expect("connect");
    let first = expect_connected(&mut events).await;
    assert_eq!(first.user_id.as_deref(), Some("carol"));
    acked(client.join_group("room")).await.expect("join room");
    acked(client.join_group("vip")).await.expect("join vip");

    // Cut, and keep the client out until the server has given the connection up.
    proxy.refuse_new(true);
    assert_eq!(proxy.cut_all().await, 1);
    assert_eventually!(
        !server.router().connection_exists(HUB, &first.connection_id),
        "the server kept the connection past its recovery window"
    );
    proxy.refuse_new(false);

    match next_event(&mut events).await {
        Event::Disconnected(Disconnected {
            connection_id,
            close_code,
            ..
        }) => {
            assert_eq!(connection_id, first.connection_id);
            assert_eq!(close_code, Some(1008), "recovery refused with 1008");
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    match next_event(&mut events).await {
        Event::RejoinGroupFailed(RejoinGroupFailed { group, error, .. }) => {
            assert_eq!(group, "vip");
            assert!(error.is_forbidden(), "{error:?}");
        }
        other => panic!("expected RejoinGroupFailed, got {other:?}"),
    }
    let second = expect_connected(&mut events).await;
    assert_ne!(second.connection_id, first.connection_id);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one URL per new connection"
    );
    assert_eq!(client.connection_id(), Some(second.connection_id.clone()));

    // `room` was rejoined before `Connected`; `vip` was not.
    let mut publisher = server
        .json_client(HUB, Some("publisher"), &[SEND_ROLE], &[])
        .await;
    publisher.publish_text("vip", "not for carol").await;
    publisher.publish_text("room", "for carol").await;
    let m = expect_group_message(&mut events).await;
    assert_eq!(
        (m.group.as_str(), m.payload.as_text()),
        ("room", Some("for carol"))
    );
    assert_eq!(m.from_user_id.as_deref(), Some("publisher"));
    client.stop().await;
}

/// Without a reliable protocol there is nothing to recover: a cut ends the connection, and
/// the client reconnects and rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_reliable_protocol_reconnects_and_rejoins_after_a_cut() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.client_addr()).await;
    let url = server.url_through(&proxy, HUB, Some("dave"), &[JOIN_ROLE], &[]);
    let (client, mut events) = connect(url, Protocol::Protobuf).await;
    let first = expect_connected(&mut events).await;
    acked(client.join_group("room")).await.expect("join");

    assert_eq!(proxy.cut_all().await, 1);
    match next_event(&mut events).await {
        Event::Disconnected(d) => {
            assert_eq!(d.connection_id, first.connection_id);
            assert_eq!(d.close_code, None, "cut without a close frame");
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    let second = expect_connected(&mut events).await;
    assert_ne!(second.connection_id, first.connection_id);
    let mut publisher = server
        .json_client(HUB, Some("publisher"), &[SEND_ROLE], &[])
        .await;
    publisher.publish_text("room", "back").await;
    let m = expect_group_message(&mut events).await;
    assert_eq!(m.payload.as_text(), Some("back"));
    assert_eq!(m.sequence_id, None, "no sequence ids without reliability");
    client.stop().await;
}

/// Every data type arrives typed, in both directions and on both encodings; server messages,
/// events and permission errors are reported as such; `stop` ends with `Stopped`.
async fn typed_payloads_events_and_stop(protocol: Protocol) {
    let server = TestServer::start().await;
    let roles = [JOIN_ROLE, "webpubsub.sendToGroup.types"];
    let url = server.url(HUB, Some("alice"), &roles, &[]);
    let (client, mut events) = connect(url, protocol).await;
    let connected = expect_connected(&mut events).await;
    assert_eq!(connected.user_id.as_deref(), Some("alice"));
    assert_eq!(client.user_id().as_deref(), Some("alice"));
    let id = connected.connection_id.clone();
    acked(client.join_group("types")).await.expect("join");

    let mut bob = server
        .json_client(HUB, Some("bob"), &[JOIN_ROLE, SEND_ROLE], &[])
        .await;
    bob.join("types").await;
    let timestamp = prost_types::Timestamp {
        seconds: 42,
        nanos: 7,
    };
    let any = Any::from_msg(&timestamp).expect("packs");
    let sent = [
        ("text", json!("héllo")),
        ("json", json!({"n": 7})),
        ("binary", json!(STANDARD.encode([0u8, 1, 254, 255]))),
        ("protobuf", json!(STANDARD.encode(any.encode_to_vec()))),
    ];
    for (ack_id, (data_type, data)) in (1u64..).zip(sent) {
        bob.send(json!({
            "type": "sendToGroup", "group": "types", "ackId": ack_id,
            "dataType": data_type, "data": data, "noEcho": true,
        }))
        .await;
        bob.expect_ack_ok(ack_id).await;
    }
    // The protobuf protocols do not carry the sender's user id.
    let from = (protocol == Protocol::JsonReliable).then(|| "bob".to_owned());
    let m = expect_group_message(&mut events).await;
    assert_eq!(
        (m.payload.as_text(), &m.from_user_id),
        (Some("héllo"), &from)
    );
    let m = expect_group_message(&mut events).await;
    assert_eq!(
        m.payload.to_json::<Numbered>().expect("typed"),
        Numbered { n: 7 }
    );
    let m = expect_group_message(&mut events).await;
    assert_eq!(
        m.payload.as_binary().map(|b| b.to_vec()),
        Some(vec![0, 1, 254, 255])
    );
    let m = expect_group_message(&mut events).await;
    let unpacked = m
        .payload
        .as_protobuf()
        .expect("protobuf payload")
        .to_msg::<prost_types::Timestamp>()
        .expect("unpacks");
    assert_eq!(unpacked, timestamp);
    assert!(
        m.sequence_id.is_some(),
        "reliable protocols number messages"
    );

    // A message from the server to this connection.
    assert!(server.router().send_to_connection(
        HUB,
        &id,
        &Message::from_server(Data::Text("direct".into()))
    ));
    match next_event(&mut events).await {
        Event::ServerMessage(m) => assert_eq!(m.payload.as_text(), Some("direct")),
        other => panic!("expected a server message, got {other:?}"),
    }

    // Alice publishes every type; Bob (JSON) receives them as Azure's JSON clients do.
    let payloads = [
        Payload::json(&Numbered { n: 8 }).expect("encodes"),
        Payload::binary(vec![9u8, 10]),
        Payload::from(any.clone()),
        Payload::text("bye"),
    ];
    for payload in payloads {
        let ack = acked(client.send_to_group("types", payload).no_echo(true))
            .await
            .expect("send");
        assert!(!ack.is_duplicate());
    }
    let expected = [
        ("json", json!({"n": 8})),
        ("binary", json!("CQo=")),
        ("protobuf", json!(STANDARD.encode(any.encode_to_vec()))),
        ("text", json!("bye")),
    ];
    for (data_type, data) in expected {
        let m = bob.recv_message().await;
        assert_eq!(
            (&m["dataType"], &m["data"]),
            (&json!(data_type), &data),
            "{m}"
        );
        assert_eq!(m["fromUserId"], "alice", "{m}");
    }
    // noEcho: nothing came back to Alice; events work; a fire-and-forget send has no id.
    acked(client.send_event("chat", json!({"a": 1})))
        .await
        .expect("event");
    let ack = acked(
        client
            .send_to_group("types", "ff")
            .no_echo(true)
            .fire_and_forget(),
    )
    .await
    .expect("fire and forget");
    assert_eq!(ack.ack_id(), None);
    let m = bob.recv_message().await;
    assert_eq!(m["data"], "ff", "{m}");

    // No permission to publish there: the service's Forbidden is the error.
    let error = acked(client.send_to_group("elsewhere", "x"))
        .await
        .expect_err("forbidden");
    assert!(error.is_forbidden() && error.is_ack(), "{error:?}");
    // A chosen ack id that the service has seen is answered Duplicate, not run again.
    let ack = acked(
        client
            .send_to_group("types", "chosen")
            .no_echo(true)
            .ack_id(500),
    )
    .await
    .expect("send");
    assert!(!ack.is_duplicate());
    let ack = acked(
        client
            .send_to_group("types", "chosen")
            .no_echo(true)
            .ack_id(500),
    )
    .await
    .expect("send");
    assert!(ack.is_duplicate());
    let m = bob.recv_message().await;
    assert_eq!(m["data"], "chosen", "{m}");
    bob.expect_nothing_queued().await;

    // Stop: Disconnected (normal closure), then Stopped, then the end of the stream.
    tokio::time::timeout(TIMEOUT, client.stop())
        .await
        .expect("stop timed out");
    match next_event(&mut events).await {
        Event::Disconnected(d) => {
            assert_eq!(d.connection_id, id);
            assert_eq!(d.close_code, Some(1000));
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert!(matches!(next_event(&mut events).await, Event::Stopped));
    let end = tokio::time::timeout(TIMEOUT, events.recv())
        .await
        .expect("the stream ends");
    assert!(end.is_none(), "nothing after Stopped: {end:?}");
    assert_eq!(client.state(), State::Stopped);
    assert_eq!(client.connection_id(), None);
    let error = acked(client.join_group("types"))
        .await
        .expect_err("stopped");
    assert!(error.is_stopped(), "{error:?}");
    tokio::time::timeout(TIMEOUT, client.stop())
        .await
        .expect("stopping twice returns at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_payloads_events_and_stop_are_typed() {
    typed_payloads_events_and_stop(Protocol::JsonReliable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_payloads_events_and_stop_are_typed() {
    typed_payloads_events_and_stop(Protocol::ProtobufReliable).await;
}

/// A refused first connection is an error the caller can classify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_unauthorized() {
    let server = TestServer::start().await;
    let url = server.ws_url(&format!("/client/hubs/{HUB}?access_token=not-a-jwt"));
    let error = tokio::time::timeout(TIMEOUT, Client::builder(url).connect())
        .await
        .expect("connect timed out")
        .expect_err("refused");
    assert!(error.is_unauthorized(), "{error:?}");
    assert_eq!(error.http_status(), Some(401));
    let error = Client::builder("http://example.invalid")
        .connect()
        .await
        .expect_err("not a ws:// URL");
    assert!(error.is_invalid_argument(), "{error:?}");
}

/// A spawned client keeps trying until the service is reachable; requests made meanwhile
/// wait for the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_client_connects_once_the_service_is_reachable() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.client_addr()).await;
    proxy.refuse_new(true);
    let url = server.url_through(&proxy, HUB, Some("erin"), &[JOIN_ROLE], &[]);
    let (client, mut events) = fast(Client::builder(url)).spawn().expect("spawns");
    let join = client.join_group("later").into_future();
    assert_eventually!(proxy.accepted() >= 2, "the client keeps trying");
    assert_eq!(client.state(), State::Connecting);
    proxy.refuse_new(false);
    let connected = expect_connected(&mut events).await;
    acked(join)
        .await
        .expect("the queued join is sent once connected");
    assert_eventually!(server.router().group_exists(HUB, "later"));
    assert_eq!(client.connection_id(), Some(connected.connection_id));
    drop(client);
    // Dropping the last handle stops the client.
    loop {
        if let Event::Stopped = next_event(&mut events).await {
            break;
        }
    }
}

/// A connection on which nothing arrives (the proxy holds everything back, pongs included)
/// is taken as dead after the keep-alive timeout and recovered: same connection, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_taken_as_dead_and_recovered() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.client_addr()).await;
    let url = server.url_through(&proxy, HUB, Some("frank"), &[JOIN_ROLE], &[]);
    let (client, mut events) = tokio::time::timeout(
        TIMEOUT,
        fast(Client::builder(url))
            .with_keepalive_interval(Duration::from_millis(100))
            .with_keepalive_timeout(Duration::from_millis(400))
            .connect(),
    )
    .await
    .expect("connect timed out")
    .expect("connect");
    let first = expect_connected(&mut events).await;
    acked(client.join_group("quiet")).await.expect("join");
    let mut publisher = server
        .json_client(HUB, Some("publisher"), &[SEND_ROLE], &[])
        .await;

    proxy.hold_downstream(true);
    publisher.publish_text("quiet", "while silent").await;
    // Nobody cuts anything: only the client's keep-alive timeout opens a new connection.
    assert_eventually!(
        proxy.accepted() >= 2,
        "the client never gave up the silent socket"
    );
    proxy.hold_downstream(false);

    let m = expect_group_message(&mut events).await;
    assert_eq!(m.payload.as_text(), Some("while silent"));
    publisher.publish_text("quiet", "after").await;
    let m = expect_group_message(&mut events).await;
    assert_eq!(m.payload.as_text(), Some("after"));
    assert_eq!(client.connection_id(), Some(first.connection_id));
    assert_eq!(proxy.cuts(), 0);
    client.stop().await;
}

/// `invoke_event` against a webhook backend: an answer, an empty answer, a refusal with the
/// handler's words, the caller's timeout and a dropped future cancelling the call upstream
/// (its webhook request is dropped before the backend answers), an id in flight refused.
async fn invoke_event_answers_fails_and_cancels(protocol: Protocol) {
    use hubcast_integration_tests::webhook::{Answer, WebhookReceiver};
    use hubcast_server::config::{EventHandlerConfig, HubConfig};

    let mut receiver = WebhookReceiver::start_with(|r| match r.event() {
        _ if r.method == http::Method::OPTIONS => Answer::allow_any_origin(),
        "echo" => Answer::status(200)
            .header("content-type", "application/json")
            .body(r.body.clone()),
        "empty" => Answer::status(204),
        "refuse" => Answer::status(400).body("not like that"),
        // "hold": answered too late for every caller.
        _ => Answer::status(204).after(Duration::from_secs(3)),
    })
    .await;
    let handler = EventHandlerConfig {
        url_template: receiver.url("/upstream/{event}"),
        user_event_pattern: Some("*".into()),
        system_events: Vec::new(),
        auth: None,
        http2: false,
    };
    let server = TestServer::start_with(|c| {
        c.hubs.insert(
            HUB.into(),
            HubConfig {
                event_handlers: vec![handler],
                ..HubConfig::default()
            },
        );
    })
    .await;
    let url = server.url(HUB, Some("ivy"), &[], &[]);
    let (client, mut events) = connect(url, protocol).await;
    expect_connected(&mut events).await;

    let answer = tokio::time::timeout(TIMEOUT, client.invoke_event("echo", json!({"n": [1, 2]})))
        .await
        .expect("in time")
        .expect("answered");
    assert_eq!(answer, Some(Payload::Json(json!({"n": [1, 2]}))));
    let empty = client.invoke_event("empty", "x").await.expect("answered");
    assert_eq!(empty, None);
    let refused = client
        .invoke_event("refuse", "x")
        .await
        .expect_err("refused");
    assert!(refused.is_invocation(), "{refused}");
    assert_eq!(refused.invocation_error_name(), Some("BadRequest"));
    assert_eq!(refused.invocation_error_message(), Some("not like that"));

    let started = std::time::Instant::now();
    let late = client
        .invoke_event("hold", "t")
        .timeout(Duration::from_millis(300))
        .await
        .expect_err("timed out");
    assert!(late.is_timeout(), "{late}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // A future dropped before the answer cancels the call: its request is dropped too.
    let dropped = client.invoke_event("hold", "d").into_future();
    assert_eq!(dropped.invocation_id(), "5");
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(dropped);
    // Both held calls reached the backend, which has not answered them: their ids are free
    // again only because the service abandoned them (else it answers `Duplicate`).
    receiver.next_named("hold").await;
    receiver.next_named("hold").await;
    for id in ["4", "5"] {
        let again = client
            .invoke_event("echo", json!(id))
            .invocation_id(id)
            .await
            .expect("the id is free again");
        assert_eq!(again, Some(Payload::Json(json!(id))));
    }
    client.stop().await;
}

#[tokio::test]
async fn json_invoke_event_answers_fails_and_cancels() {
    invoke_event_answers_fails_and_cancels(Protocol::JsonReliable).await;
}

#[tokio::test]
async fn protobuf_invoke_event_answers_fails_and_cancels() {
    invoke_event_answers_fails_and_cancels(Protocol::Protobuf).await;
}

/// Group streams through the SDK: a writer's chunks reach a reader in order with their
/// positions and no gaps, then the end; the service's idle timeout ends a stream and the
/// writer learns why; a stream of a dropped socket fails its writer.
async fn group_streams_write_and_arrive_in_order(protocol: Protocol) {
    let server = TestServer::start().await;
    let roles = [JOIN_ROLE, SEND_ROLE];
    let (publisher, mut pub_events) =
        connect(server.url(HUB, Some("pub"), &roles, &[]), protocol).await;
    expect_connected(&mut pub_events).await;
    let (reader, mut events) =
        connect(server.url(HUB, Some("reader"), &roles, &[]), protocol).await;
    expect_connected(&mut events).await;
    acked(publisher.join_group("live")).await.expect("join");
    acked(reader.join_group("live")).await.expect("join");

    let mut writer = tokio::time::timeout(
        TIMEOUT,
        publisher
            .open_group_stream("live")
            .stream_id("s1")
            .no_echo(true)
            .into_future(),
    )
    .await
    .expect("in time")
    .expect("opened");
    assert_eq!(writer.stream_id(), "s1");
    for i in 1..=5u64 {
        writer.write(format!("chunk {i}")).await.expect("taken");
    }
    writer.keep_alive().expect("sent");
    writer.end().await.expect("closed");
    for i in 1..=6u64 {
        let m = expect_group_message(&mut events).await;
        let stream = m.stream.expect("a stream message");
        assert_eq!(
            (stream.stream_id.as_str(), stream.sequence_id, stream.missed),
            ("s1", i, 0)
        );
        if i <= 5 {
            assert_eq!(m.payload.as_text(), Some(format!("chunk {i}").as_str()));
            assert!(!stream.end);
        } else {
            assert!(stream.end, "the end follows the last chunk");
            assert_eq!(stream.error, None);
        }
    }

    // Ended by the service when idle: the next write fails with its reason.
    let mut idle = publisher
        .open_group_stream("live")
        .idle_timeout(Duration::from_millis(200))
        .await
        .expect("opened");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let error = idle.write("late").await.expect_err("the stream ended");
    assert!(error.is_stream() || error.is_closed(), "{error}");
    let end = expect_group_message(&mut events).await;
    let position = end.stream.expect("a stream message");
    assert!(position.end);
    assert_eq!(
        position.error.as_ref().map(|e| e.0.as_str()),
        Some("IdleTimeout")
    );

    // Refused: no right to send to the group.
    let (outsider, mut outsider_events) =
        connect(server.url(HUB, Some("out"), &[], &[]), protocol).await;
    expect_connected(&mut outsider_events).await;
    let refused = outsider
        .open_group_stream("live")
        .await
        .expect_err("refused");
    assert_eq!(refused.stream_error_name(), Some("Forbidden"));
    publisher.stop().await;
    reader.stop().await;
    outsider.stop().await;
}

#[tokio::test]
async fn json_group_streams_write_and_arrive_in_order() {
    group_streams_write_and_arrive_in_order(Protocol::JsonReliable).await;
}

#[tokio::test]
async fn protobuf_group_streams_write_and_arrive_in_order() {
    group_streams_write_and_arrive_in_order(Protocol::ProtobufReliable).await;
}
